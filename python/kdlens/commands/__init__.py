"""One module per ``kdlens`` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules import only the standard library at top level so that ``kdlens
--help`` stays fast; the stage they call is imported inside ``run``. ``kdlens.cli`` discovers the
modules in this package, so adding a command is adding one file here.
"""
