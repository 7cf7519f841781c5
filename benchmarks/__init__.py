"""Benchmark suite for fastssim against its reference and peer SSIM libraries.

Run ``python -m benchmarks.run --help`` for the measurement and
``python -m benchmarks.report <json>`` to render a results file as a markdown
table and a log-log plot. See ``benchmarks/README.md``.
"""
