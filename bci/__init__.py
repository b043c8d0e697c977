"""bci: runtime and public face of the closed-loop framework.

Holds the shared types (:mod:`bci.types`), the error hierarchy (:mod:`bci.errors`),
config loading (:mod:`bci.config`) and the command line (:mod:`bci.cli`).
"""

__version__ = "0.1.0"
