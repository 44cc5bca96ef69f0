"""Criteo 1TB click-through-rate prediction with DLRM-small (AlgoPerf's criteo1tb)."""
