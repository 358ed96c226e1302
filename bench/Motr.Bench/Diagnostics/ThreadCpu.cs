namespace Motr.Bench.Diagnostics;

/// <summary>CPU use of one group of threads over a window, as a share of one core.</summary>
/// <param name="Name">Thread name ("motr-…", ".NET …"), "other threads", or <see cref="ThreadCpu.OtherProcesses"/>.</param>
/// <param name="CpuShare">Time on a CPU / window (1.0 = one core busy all the time).</param>
/// <param name="WaitShare">Time runnable but waiting for a CPU / window (run-queue delay).</param>
internal readonly record struct ThreadCpuShare(string Name, double CpuShare, double WaitShare);

/// <summary>
/// Per-thread CPU time of this process from /proc/self/task/*/schedstat (nanoseconds on a CPU and
/// waiting on a run queue), so a benchmark can say which thread the time goes to. Linux only; elsewhere
/// snapshots are empty. Snapshots allocate: take them outside measured loops.
/// </summary>
internal static class ThreadCpu
{
    /// <summary>Name of the entry for CPU used by everything else on the machine: other processes and kernel threads (writeback included).</summary>
    public const string OtherProcesses = "other processes";

    internal readonly record struct Sample(string Name, long RunNs, long WaitNs);

    /// <summary>A snapshot of every live thread's times.</summary>
    internal sealed class Snapshot
    {
        internal readonly Dictionary<int, Sample> Threads = new();
        internal readonly long Timestamp = System.Diagnostics.Stopwatch.GetTimestamp();
        internal long MachineBusyTicks, ProcessTicks;
    }

    /// <summary>Clock ticks per second of /proc/stat and /proc/self/stat (USER_HZ, 100 on every Linux build that matters).</summary>
    private const double UserHz = 100;

    public static Snapshot Take()
    {
        var s = new Snapshot();
        if (!Directory.Exists("/proc/self/task")) return s;
        try
        {
            // cpu  user nice system idle iowait irq softirq steal ...
            var cpu = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            foreach (int i in (int[])[1, 2, 3, 6, 7, 8]) s.MachineBusyTicks += long.Parse(cpu[i]);
            // pid (comm) state ... utime stime: fields 14 and 15, i.e. 11 and 12 after the closing parenthesis
            string stat = File.ReadAllText("/proc/self/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            s.ProcessTicks = long.Parse(f[11]) + long.Parse(f[12]);
        }
        catch (IOException) { }
        foreach (var dir in Directory.EnumerateDirectories("/proc/self/task"))
        {
            try
            {
                if (!int.TryParse(Path.GetFileName(dir), out int tid)) continue;
                string name = File.ReadAllText(Path.Combine(dir, "comm")).Trim();
                var f = File.ReadAllText(Path.Combine(dir, "schedstat")).Split(' ');
                s.Threads[tid] = new Sample(name, long.Parse(f[0]), long.Parse(f[1]));
            }
            catch (IOException) { } // the thread ended meanwhile
        }
        return s;
    }

    /// <summary>CPU microseconds per operation of this process's threads (those <paramref name="which"/> accepts, default all) over a window of <paramref name="seconds"/>.</summary>
    public static double PerOpMicros(IReadOnlyList<ThreadCpuShare> threads, double seconds, long ops, Func<string, bool>? which = null) =>
        ops > 0 ? threads.Where(t => t.Name != OtherProcesses && (which is null || which(t.Name))).Sum(t => t.CpuShare) * seconds * 1e6 / ops : double.NaN;

    /// <summary>"cpu per {unit} in us: thread x, ...; total t": this process's threads, busy ones only.</summary>
    public static string PerOpNote(IReadOnlyList<ThreadCpuShare> threads, double seconds, long ops, string unit) =>
        $"cpu per {unit} in us: " + string.Join(", ", threads.Where(t => t.Name != OtherProcesses && t.CpuShare >= 0.005)
            .Select(t => $"{t.Name} {PerOpMicros([t], seconds, ops):F2}")) + $"; total {PerOpMicros(threads, seconds, ops):F2}";

    /// <summary>CPU and run-queue wait per thread name between two snapshots, busiest first (engine "motr-…" and runtime ".NET …" threads by name, the rest as "other threads"), then other processes.</summary>
    public static List<ThreadCpuShare> Between(Snapshot before, Snapshot after)
    {
        double windowNs = (after.Timestamp - before.Timestamp) * 1e9 / System.Diagnostics.Stopwatch.Frequency;
        var groups = new Dictionary<string, (long Run, long Wait)>();
        foreach (var (tid, a) in after.Threads)
        {
            before.Threads.TryGetValue(tid, out var b);
            long run = a.RunNs - b.RunNs, wait = a.WaitNs - b.WaitNs;
            if (run == 0 && wait == 0) continue;
            string group = a.Name.StartsWith("motr-", StringComparison.Ordinal) || a.Name.StartsWith(".NET", StringComparison.Ordinal) ? a.Name : "other threads";
            groups.TryGetValue(group, out var g);
            groups[group] = (g.Run + run, g.Wait + wait);
        }
        var list = groups.Select(kv => new ThreadCpuShare(kv.Key, kv.Value.Run / windowNs, kv.Value.Wait / windowNs))
            .OrderByDescending(x => x.CpuShare).ToList();
        // Whatever else ran on the machine meanwhile (another build, another bench) competes for the same cores.
        double others = ((after.MachineBusyTicks - before.MachineBusyTicks) - (after.ProcessTicks - before.ProcessTicks)) / UserHz / (windowNs / 1e9);
        list.Add(new ThreadCpuShare(OtherProcesses, Math.Max(0, others), 0));
        return list;
    }
}
