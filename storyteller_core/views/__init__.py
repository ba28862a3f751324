"""What a person reads: rows in plain words, a batch's totals, reports for Queue, and exports."""
