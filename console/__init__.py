"""The console: the grammar (parsing only), what a parsed line becomes (orders), the desk's picture as
the console sees it, the views (tables) and the terminal (prompt, completion, script mode). Imports no
actor."""
