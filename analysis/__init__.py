"""Real-model analyses of lcc_lens, run as ``python -m analysis.<script>`` from the repository root."""
