"""What the notebooks and ``make walkthrough`` show and write: tables, plots, the report, the explorer, the runners."""
