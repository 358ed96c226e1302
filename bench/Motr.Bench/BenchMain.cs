using Motr.Bench.Macro;
using Motr.Bench.Peers;

namespace Motr.Bench;

/// <summary>
/// The harness's entry: parses the command line, runs the command, prints the table and writes the JSON.
/// Exit codes: 0 the run completed (every check passed), 1 the run failed (a check found a wrong result,
/// an operation or the engine failed: the message says which, nothing is printed as a result and no JSON is
/// written), 2 a bad command line or a missing peer.
/// </summary>
internal static class BenchMain
{
    private static readonly Dictionary<string, BenchCommand> Commands = new(StringComparer.OrdinalIgnoreCase)
    {
        ["tx"] = new(TxBench.RunAsync, Baseline: SqlitePeer.SystemName),
        ["btree"] = new(BTreeBench.RunAsync, Baseline: LmdbPeer.SystemName, Summary: BTreeBench.PrintGoals),
    };

    public static async Task<int> RunAsync(string[] args)
    {
        BenchOptions options;
        try
        {
            options = BenchOptions.Parse(args);
            if (!Commands.ContainsKey(options.Command)) throw new UsageException($"unknown command {options.Command}");
        }
        catch (UsageException e)
        {
            if (e.Message.Length > 0) Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(BenchOptions.Usage);
            return e.Message.Length > 0 ? 2 : 0;
        }

        BenchDirectory? dir = null;
        ConsoleCancelEventHandler onCancel = (_, _) => dir?.Dispose();  // Ctrl-C skips the finally; do not leave the folder behind
        Console.CancelKeyPress += onCancel;
        try
        {
            dir = BenchDirectory.Create(options.Dir);
            var machine = MachineInfo.Collect(dir.Path);
            Console.WriteLine($"machine: {machine}");
            Console.WriteLine($"bench folder: {dir.Path}");

            var command = Commands[options.Command];
            var results = await command.Run(options, dir);
            Report.PrintTable(Console.Out, machine, results, command.Baseline);
            command.Summary?.Invoke(Console.Out, results);
            if (options.JsonPath is { } json)
            {
                Report.WriteJson(json, machine, RunInfo.Collect(args, options), results, command.Baseline);
                Console.WriteLine($"\nwrote {json}");
            }
            if (options.SelfCheck) Console.WriteLine("\nself-check passed: every damaged store failed the checks that must see it");
            return 0;
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine(e.Message);
            return 2;
        }
        catch (Exception e)
        {
            // A wrong result or a failed operation: the run measured nothing. Say what, plainly, then the details.
            Console.Out.Flush();
            Console.Error.WriteLine($"bench failed: {Describe(e)}");
            Console.Error.WriteLine("no result was reported" + (options.JsonPath is { } j ? $" and {j} was not written" : "") + "; details:");
            Console.Error.WriteLine(e);
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
            dir?.Dispose();
        }
    }

    /// <summary>The message of <paramref name="e"/>, unwrapping the aggregates of Task.WhenAll and the like.</summary>
    private static string Describe(Exception e)
    {
        while (e is AggregateException { InnerExceptions.Count: 1 } a) e = a.InnerExceptions[0];
        if (e is AggregateException many)
            return $"{many.InnerExceptions.Count} errors, first: {Describe(many.InnerExceptions[0])}";
        return e is InvalidOperationException ? e.Message : $"{e.GetType().Name}: {e.Message}";
    }
}

/// <summary>A command of the harness: what it runs, and the system its table compares the others with.</summary>
internal sealed record BenchCommand(
    Func<BenchOptions, BenchDirectory, Task<List<BenchResult>>> Run,
    string Baseline,
    Action<TextWriter, IReadOnlyList<BenchResult>>? Summary = null);
