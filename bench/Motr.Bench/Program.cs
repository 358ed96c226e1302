using Motr.Bench;

// The benchmark harness: `Motr.Bench <command> [options]`. Each command measures motr and its peers
// in the same run and prints one table (plus JSON with --json). Benchmarks are not tests: nothing
// here asserts a time.
return await BenchMain.RunAsync(args);
