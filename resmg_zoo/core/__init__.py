"""The lowest layer: facts and helpers every other part uses, importing nothing else of the package.

Dataset tags, the paper's tables, option checks, parameter counts, atomic files, hashes, the
machine, and the helpers of the command-line tools.
"""
