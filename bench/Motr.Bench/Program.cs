using Motr.Bench;
using Motr.Bench.Macro;

// The benchmark harness: `Motr.Bench <command> [options]`. Each command measures motr and its peers
// in the same run and prints one table (plus JSON with --json). Benchmarks are not tests: nothing
// here asserts a time.
var commands = new Dictionary<string, Func<BenchOptions, BenchDirectory, Task<List<BenchResult>>>>(StringComparer.OrdinalIgnoreCase)
{
    ["tx"] = TxBench.RunAsync,
};

BenchOptions options;
try
{
    options = BenchOptions.Parse(args);
    if (!commands.ContainsKey(options.Command)) throw new UsageException($"unknown command {options.Command}");
}
catch (UsageException e)
{
    if (e.Message.Length > 0) Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(BenchOptions.Usage);
    return e.Message.Length > 0 ? 2 : 0;
}

using var dir = BenchDirectory.Create(options.Dir);
Console.CancelKeyPress += (_, _) => dir.Dispose();  // Ctrl-C skips the using; do not leave the folder behind
var machine = MachineInfo.Collect(dir.Path);
Console.WriteLine($"machine: {machine}");
Console.WriteLine($"bench folder: {dir.Path}; warm-up {options.Warmup.TotalSeconds:0.##} s, window {options.Duration.TotalSeconds:0.##} s per row");

List<BenchResult> results;
try
{
    results = await commands[options.Command](options, dir);
}
catch (UsageException e)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}
Report.PrintTable(Console.Out, machine, results);
if (options.JsonPath is { } json)
{
    Report.WriteJson(json, machine, results);
    Console.WriteLine($"\nwrote {json}");
}
return 0;
