"""The benchmark workloads live in the package, `onduty.bench`, so that `onduty bench` runs
from an installed onduty as well as from a checkout; see BENCHMARKS.md for their figures."""
