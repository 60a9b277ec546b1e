"""Triton kernels shipped inside the wheel as ``kdlens.kernels``.

The sources live in the repository's top-level ``kernels/`` folder; each ``kernels/*.py`` has a file
symlink here (maturin follows file links, not directory links), so the wheel carries them as
``kdlens.kernels.<name>``. Never import a top-level ``kernels`` package: that name belongs to Hugging
Face's ``kernels`` project. Importing this package does not import Triton.
"""
