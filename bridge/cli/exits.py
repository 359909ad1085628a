"""Exit statuses of ``mbridge``: 0 done; 1 something failed while running (a server that
cannot be reached, a task that failed); 2 a usage or configuration error (fix the command
line or the config); 3 ``migrate``: messages stayed in the source (or, in a dry run, would);
130 interrupted by Ctrl-C (128 + SIGINT, as shells report it)."""

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_LEFT_BEHIND = 3
EXIT_INTERRUPTED = 130
