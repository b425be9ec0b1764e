"""Local simulators of the destination APIs, faithful to destination-apis.md §5.

Tests, the demo and the benchmark use them instead of the real services.
"""
