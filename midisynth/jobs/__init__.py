"""Jobs and outputs: planning a batch of renders, running it, and writing audio, stems, plots and loudness."""
