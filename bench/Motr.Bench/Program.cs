using Motr.Bench;
using Motr.Bench.Macro;
using Motr.Bench.Peers;

// The benchmark harness: `Motr.Bench <command> [options]`. Each command measures motr and its peers
// in the same run and prints one table (plus JSON with --json). Benchmarks are not tests: nothing
// here asserts a time.
var commands = new Dictionary<string, BenchCommand>(StringComparer.OrdinalIgnoreCase)
{
    ["tx"] = new(TxBench.RunAsync, Baseline: SqlitePeer.SystemName),
    ["btree"] = new(BTreeBench.RunAsync, Baseline: LmdbPeer.SystemName, Summary: BTreeBench.PrintGoals),
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
Console.WriteLine($"bench folder: {dir.Path}");

var command = commands[options.Command];
List<BenchResult> results;
try
{
    results = await command.Run(options, dir);
}
catch (UsageException e)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}
Report.PrintTable(Console.Out, machine, results, command.Baseline);
command.Summary?.Invoke(Console.Out, results);
if (options.JsonPath is { } json)
{
    Report.WriteJson(json, machine, results, command.Baseline);
    Console.WriteLine($"\nwrote {json}");
}
return 0;

/// <summary>A command of the harness: what it runs, and the system its table compares the others with.</summary>
internal sealed record BenchCommand(
    Func<BenchOptions, BenchDirectory, Task<List<BenchResult>>> Run,
    string Baseline,
    Action<TextWriter, IReadOnlyList<BenchResult>>? Summary = null);
