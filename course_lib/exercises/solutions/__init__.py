"""Reference solutions to the exercises, one module per chapter; the tests prove the checkers accept them."""
