"""Redis in Practice: the tested code behind the course notebooks.

Start with `course_lib.connection.connect()`; the embedded servers live in `course_lib.runtime`.
"""
