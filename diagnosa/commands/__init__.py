"""Command groups that live in their own modules; each exposes ``register(commands, common)``.

``commands`` is the top-level ``argparse`` sub-parsers object; ``common`` is the ``diagnosa.cli``
module (for ``open_lake``, ``workspace``, ``UsageError`` and the argument parsers), passed in so
command modules do not import the CLI at import time.
"""
