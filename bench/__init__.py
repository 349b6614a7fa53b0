"""Benchmarks: ``make bench`` runs every ``bench/bench_*.py``; each prints one JSON object per
figure, with the baseline it is compared against measured in the same process."""
