using System.Diagnostics;
using System.Text;
using Motr.Be;
using Motr.CrashChild;
using Xunit.Abstractions;

namespace Motr.Crash.Tests;

/// <summary>
/// Level (b) crash tests (DESIGN §8, docs/crash-testing.md): the Motr.CrashChild process runs a workload (the raw
/// counter, or the b+tree window) on a real folder and is killed with SIGKILL at a random moment, over and over on
/// the same folder. After each kill the folder is recovered in-process and checked: every transaction the child
/// reported persistent is there, and each segment is exactly the state after transaction C (C its counter). Every
/// third cycle the next child recovers the killed state itself (and may be killed while recovering); it is checked at
/// the next verification.
/// </summary>
/// <remarks>Set MOTR_CRASH_SEED to rerun with a seed; failures name the seed and the folder, which is kept.</remarks>
public sealed class ProcessKillTests(ITestOutputHelper output)
{
    /// <summary>Kill cycles per run of the counter workload.</summary>
    private const int Cycles = 32;

    /// <summary>Kill cycles per run of the b+tree workload.</summary>
    private const int BTreeCycles = 24;

    /// <summary>Kill cycles per run of the delete-all workload.</summary>
    private const int DeleteAllCycles = 20;

    /// <summary>The child is killed this long after it starts, at random (it starts, recovers, then runs).</summary>
    private const int MinKillMs = 150, MaxKillMs = 1000;

    private void Print(string line)
    {
        output.WriteLine(line);
        Console.WriteLine(line);
    }

    /// <summary>What one child run printed.</summary>
    private sealed class ChildRun
    {
        public readonly long?[] Recovered = new long?[ChildConfig.Segments];     // "R loc counter"
        public readonly long[] MinPrinted = Enumerable.Repeat(long.MaxValue, ChildConfig.Segments).ToArray();
        public readonly long[] MaxPrinted = new long[ChildConfig.Segments];       // largest "P loc value"
        public readonly long[] Printed = new long[ChildConfig.Segments];          // how many "P" lines
        public readonly List<string> Unexpected = new();
        public readonly StringBuilder Stderr = new();
        public int ExitCode;
        public bool ExitedBeforeKill;
        /// <summary>Read-only opens tried while the child held the folder (after it printed every "R"), and what each did other than be refused for the lock.</summary>
        public int Probes;
        public readonly List<string> ProbeFailures = new();

        public string RecoveryLine => Stderr.ToString().Split('\n').FirstOrDefault(l => l.StartsWith("recovery:", StringComparison.Ordinal))?.Trim() ?? "(none: killed before recovery finished)";
    }

    private static string ChildDll()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "Motr.CrashChild.dll");
        string config = Path.Combine(AppContext.BaseDirectory, "Motr.CrashChild.runtimeconfig.json");
        Assert.True(File.Exists(dll), $"{dll} is missing: the test project must reference tests/Motr.CrashChild");
        Assert.True(File.Exists(config), $"{config} is missing: `dotnet Motr.CrashChild.dll` needs it next to the dll");
        return dll;
    }

    private static string DotnetHost()
    {
        string? host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(host) && File.Exists(host)) return host;
        string? self = Environment.ProcessPath;
        if (self != null && Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
        return "dotnet";
    }

    private static async Task<ChildRun> RunChildAsync(string dll, string dir, int seed, string workload, int killAfterMs)
    {
        var psi = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { dll, dir, seed.ToString(), workload }) psi.ArgumentList.Add(a);
        var run = new ChildRun();
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start the crash child");
        var stdout = Task.Run(async () =>
        {
            while (await p.StandardOutput.ReadLineAsync() is { } line)
            {
                var parts = line.Split(' ');
                if (parts.Length == 3 && (parts[0] == "P" || parts[0] == "R") && int.TryParse(parts[1], out int loc)
                    && loc >= 0 && loc < ChildConfig.Segments && long.TryParse(parts[2], out long v))
                {
                    if (parts[0] == "R") lock (run) run.Recovered[loc] = v;
                    else
                    {
                        run.Printed[loc]++;
                        run.MaxPrinted[loc] = Math.Max(run.MaxPrinted[loc], v);
                        run.MinPrinted[loc] = Math.Min(run.MinPrinted[loc], v);
                    }
                }
                else if (line.Length > 0) run.Unexpected.Add(line);
            }
        });
        var stderr = Task.Run(async () =>
        {
            while (await p.StandardError.ReadLineAsync() is { } line) run.Stderr.AppendLine(line);
        });
        // Read-only opens (what `motr fsck` does) while the child runs: once it has printed every "R" it holds the folder's
        // lock until it dies, so each must be refused naming the lock, and read nothing of a domain being changed.
        var killAt = Stopwatch.StartNew();
        while (killAt.ElapsedMilliseconds < killAfterMs)
        {
            bool recovered;
            lock (run) recovered = run.Recovered.All(r => r.HasValue);
            if (recovered && !p.HasExited)
            {
                run.Probes++;
                string? failure = await ProbeReadOnly(dir);
                if (failure != null && !p.HasExited) run.ProbeFailures.Add(failure);
            }
            await Task.Delay(Math.Clamp(killAfterMs - (int)killAt.ElapsedMilliseconds, 0, 25));
        }
        run.ExitedBeforeKill = p.HasExited;
        // SIGKILL: no finaliser, no flush, no close. Whatever the engine promised must already be on disk.
        if (!run.ExitedBeforeKill) p.Kill(entireProcessTree: true);
        await p.WaitForExitAsync();
        await Task.WhenAll(stdout, stderr);   // the lines the child wrote before it died are still in the pipes
        run.ExitCode = p.ExitCode;
        return run;
    }

    /// <summary>A read-only open of <paramref name="dir"/> while an engine holds it: null when refused for the lock, else what happened.</summary>
    private static async Task<string?> ProbeReadOnly(string dir)
    {
        var options = ChildConfig.Options(dir);
        options.ReadOnly = true;
        options.CreateIfMissing = false;
        try
        {
            await using var d = await Domain.OpenAsync(options);
            return "a read-only open succeeded while the child held the folder";
        }
        catch (BeException e) when (e.Message.Contains("the folder is in use", StringComparison.Ordinal) && e.Message.Contains(BeConstants.LockFileName, StringComparison.Ordinal))
        {
            return null;
        }
        catch (Exception e)
        {
            return $"a read-only open while the child held the folder failed otherwise: {e.GetType().Name}: {e.Message}";
        }
    }

    /// <summary>The descriptors of this process open on files in <paramref name="dir"/> (Linux).</summary>
    private static List<string> Descriptors(string dir)
    {
        var open = new List<string>();
        string prefix = Path.GetFullPath(dir) + "/";
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target && target.StartsWith(prefix, StringComparison.Ordinal)) open.Add(target);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // closed meanwhile
        }
        return open;
    }

    /// <summary>The counter workload: raw captures of a counter and a ring of records.</summary>
    [Fact]
    public Task A_child_killed_with_SIGKILL_again_and_again_loses_no_persisted_tx() =>
        KillCyclesAsync("counter", Cycles, (seg, loc) =>
        {
            long c = CounterWorkload.ReadCounter(seg);
            // Every tx on the segment is an increment, so the counter is also the segment's last tx id.
            if (c != seg.LastTxId) return (c, $"locality {loc}: counter {c} but the segment's LastTxId is {seg.LastTxId}");
            return (c, CounterWorkload.Check(seg, loc));
        });

    /// <summary>
    /// The b+tree workload: per locality a tree of 512-byte nodes holding a counter C and the window of records
    /// (C - W, C]; after every kill the tree opens, fsck finds it healthy and it is exactly the state after step C.
    /// </summary>
    [Fact]
    public Task A_child_running_btree_txs_killed_with_SIGKILL_again_and_again_recovers_a_healthy_tree_holding_every_persisted_step() =>
        KillCyclesAsync("btree", BTreeCycles, BTreeWorkload.ReadAndCheck);

    /// <summary>
    /// The delete-all workload: per locality a tree filled, emptied by delete-all, filled again, and so on; each child
    /// resumes whatever a kill interrupted. After every kill the tree opens, fsck finds it healthy, it holds the keys
    /// 1..n (filling) or m..N (emptying) with their values and nothing leaked, and no persisted transaction is lost.
    /// </summary>
    [Fact]
    public async Task A_child_running_delete_all_killed_with_SIGKILL_again_and_again_resumes_it_losing_no_persisted_batch()
    {
        int midDeleteAll = DeleteAllWorkload.RecoveredMidDeleteAll, midFill = DeleteAllWorkload.RecoveredMidFill;
        await KillCyclesAsync("deleteall", DeleteAllCycles, DeleteAllWorkload.ReadAndCheck);
        midDeleteAll = DeleteAllWorkload.RecoveredMidDeleteAll - midDeleteAll;
        midFill = DeleteAllWorkload.RecoveredMidFill - midFill;
        Print($"verified trees part-way through a delete-all: {midDeleteAll}, part-way through a fill: {midFill}");
        // The kills must have cut delete-all itself, not only the fills between.
        Assert.True(midDeleteAll >= 3, $"only {midDeleteAll} verified trees were part-way through a delete-all");
    }

    /// <summary>
    /// Runs <paramref name="cycles"/> kill cycles of <paramref name="workload"/> on one new folder. After a kill,
    /// <paramref name="readAndCheck"/> (on a recovered segment, with no owner) returns the locality's counter and null,
    /// or what is wrong: the segment must be exactly the state after the transaction that set that counter.
    /// </summary>
    private async Task KillCyclesAsync(string workload, int cycles, Func<Motr.Be.Segments.Segment, int, (long Counter, string? Problem)> readAndCheck)
    {
        int seed = CrashSeed.Or(Random.Shared.Next(1, int.MaxValue));
        string dir = Path.Combine(Path.GetTempPath(), $"motr-crash-kill-{workload}-{seed}-{Environment.ProcessId}");
        string repro = $"{workload} workload, seed {seed}, folder {dir} (kept; rerun with MOTR_CRASH_SEED={seed})";
        string dll = ChildDll();
        var rng = new Random(seed);
        var sw = Stopwatch.StartNew();
        bool passed = false;
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        try
        {
            // The first child creates the domain, so a kill can land during creation too.
            var verified = new long[ChildConfig.Segments];   // the counters as last verified in-process
            var mustHave = new long[ChildConfig.Segments];   // largest value any child printed since (and before)
            bool lastVerified = true;
            int cyclesWithProgress = 0;
            long totalPrinted = 0, totalProbes = 0, readOnlyChecks = 0;
            Print($"process-kill test: {repro}, {cycles} cycles, child {dll}");
            for (int cycle = 0; cycle < cycles; cycle++)
            {
                string at = $"{repro}, cycle {cycle}";
                int killAfter = rng.Next(MinKillMs, MaxKillMs + 1);
                bool verify = cycle % 3 != 1 || cycle == cycles - 1;
                var run = await RunChildAsync(dll, dir, seed + cycle, workload, killAfter);

                Assert.False(run.ExitedBeforeKill, $"{at}: the child exited by itself with code {run.ExitCode} before it was killed; stderr:\n{run.Stderr}");
                if (OperatingSystem.IsLinux()) Assert.Equal(128 + 9, run.ExitCode);   // killed by SIGKILL
                Assert.True(run.Unexpected.Count == 0, $"{at}: unexpected child output: {string.Join(" | ", run.Unexpected.Take(5))}; stderr:\n{run.Stderr}");
                Assert.True(run.ProbeFailures.Count == 0, $"{at}: {string.Join(" | ", run.ProbeFailures.Take(3))}");
                totalProbes += run.Probes;
                for (int loc = 0; loc < ChildConfig.Segments; loc++)
                {
                    if (run.Recovered[loc] is long r)
                    {
                        // The child's own recovery kept everything persisted before, and continued from it.
                        Assert.True(r >= mustHave[loc], $"{at}: the child recovered locality {loc} to counter {r}, but {mustHave[loc]} had been reported persistent");
                        if (lastVerified) Assert.True(r == verified[loc], $"{at}: the child recovered locality {loc} to {r}, but the folder was verified at {verified[loc]}");
                        if (run.Printed[loc] > 0) Assert.True(run.MinPrinted[loc] > r, $"{at}: locality {loc} printed {run.MinPrinted[loc]}, not above its recovered counter {r}");
                    }
                    else Assert.True(run.Printed[loc] == 0, $"{at}: locality {loc} printed values before reporting its recovered counter");
                    mustHave[loc] = Math.Max(mustHave[loc], run.MaxPrinted[loc]);
                    totalPrinted += run.Printed[loc];
                }
                if (run.Printed.Any(n => n > 0)) cyclesWithProgress++;

                string state = "not verified (the next child recovers it)";
                // The killed folder read-only first, as `motr fsck` reads it: the log replayed in memory only, it must hold a
                // healthy state with everything the child reported persistent, and exactly what the writing open below finds.
                long[]? readOnlyCounters = null;
                {
                    var ro = ChildConfig.Options(dir);
                    ro.ReadOnly = true;
                    ro.CreateIfMissing = false;
                    if (File.Exists(Path.Combine(dir, BeConstants.LogFileName)))
                    {
                        await using var d = await Domain.OpenAsync(ro);
                        readOnlyCounters = new long[ChildConfig.Segments];
                        for (int loc = 0; loc < ChildConfig.Segments; loc++)
                        {
                            var (c, problem) = readAndCheck(d.Segments[loc], loc);
                            Assert.True(problem is null, $"{at}: read-only: the state is not the state after the tx that set counter {c}: {problem} [recovery: {d.Recovery}]");
                            Assert.True(c >= mustHave[loc], $"{at}: read-only: locality {loc} holds counter {c}, but the child reported {mustHave[loc]} persistent");
                            readOnlyCounters[loc] = c;
                        }
                        readOnlyChecks++;
                    }
                }
                if (verify)
                {
                    var warnings = new List<string>();
                    await using var d = await Domain.OpenAsync(ChildConfig.Options(dir, warnings.Add));
                    var counters = new long[ChildConfig.Segments];
                    for (int loc = 0; loc < ChildConfig.Segments; loc++)
                    {
                        var seg = d.Segments[loc];
                        var (c, problem) = readAndCheck(seg, loc);
                        counters[loc] = c;
                        Assert.True(problem is null, $"{at}: the recovered state is not the state after the tx that set counter {c}: {problem} [recovery: {d.Recovery}]");
                        Assert.True(c >= mustHave[loc], $"{at}: locality {loc} recovered to counter {c}, but the child reported {mustHave[loc]} persistent " +
                            $"[recovery: {d.Recovery}]");
                        Assert.True(c >= verified[loc], $"{at}: locality {loc} recovered to counter {c}, below the {verified[loc]} verified before");
                        verified[loc] = c;
                        if (readOnlyCounters != null)
                            Assert.True(readOnlyCounters[loc] == c, $"{at}: locality {loc}: the read-only open found counter {readOnlyCounters[loc]}, the writing open {c}");
                    }
                    state = $"verified counters {string.Join(", ", counters)}; recovery: {d.Recovery}" + (warnings.Count > 0 ? $"; warnings: {string.Join(" | ", warnings)}" : "");
                }
                lastVerified = verify;
                Print($"cycle {cycle,2}: killed after {killAfter} ms; child recovered [{string.Join(", ", run.Recovered.Select(r => r?.ToString() ?? "-"))}], " +
                    $"printed {string.Join(" + ", run.Printed)} values (max [{string.Join(", ", run.MaxPrinted)}]); child {run.RecoveryLine}; {state}");
            }
            Print($"process-kill test ({workload}): {cycles} cycles, {cyclesWithProgress} killed mid-workload, {totalPrinted} txs reported persistent, " +
                $"final counters {string.Join(", ", verified)}; {sw.Elapsed.TotalSeconds:F1} s");
            Assert.True(cyclesWithProgress >= cycles / 4, $"{repro}: only {cyclesWithProgress} of {cycles} children got as far as running the workload");
            Print($"read-only opens refused while a child held the folder: {totalProbes}; read-only checks of killed folders: {readOnlyChecks}");
            if (OperatingSystem.IsLinux()) Assert.True(Descriptors(dir).Count == 0, $"{repro}: descriptors left open on the folder: {string.Join(", ", Descriptors(dir))}");
            passed = true;
        }
        finally
        {
            if (passed && Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
