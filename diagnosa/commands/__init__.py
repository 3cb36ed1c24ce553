"""Command groups that live in their own modules; each exposes ``register(commands)``, where ``commands``
is the top-level ``argparse`` sub-parsers object. What they share with ``diagnosa/cli.py`` is in
:mod:`diagnosa.commands.common`; what they share with other interfaces is in :mod:`diagnosa.services`.
"""
