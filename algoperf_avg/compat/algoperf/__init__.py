"""The ``algoperf`` package as AlgoPerf's submissions see it, on this harness."""

IS_ALGOPERF_AVG_COMPAT = True
