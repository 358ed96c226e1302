using System.Globalization;
using System.Text;
using System.Text.Json;
using Motr.Bench.Diagnostics;

namespace Motr.Bench;

/// <summary>Prints results as a console table and writes them as JSON.</summary>
internal static class Report
{
    /// <summary>A column of the console table: its head and how a row shows in it (null: no value).</summary>
    private sealed record Column(string Head, Func<BenchResult, string?> Cell, bool Always = false);

    /// <summary>
    /// Prints the table: one line per result, then each result's notes. <paramref name="baseline"/> is the
    /// system every other system of the same workload is compared with (the last column). A column no
    /// result has a value for is left out, so each bench shows only its own counters.
    /// </summary>
    public static void PrintTable(TextWriter w, MachineInfo machine, IReadOnlyList<BenchResult> results, string baseline)
    {
        w.WriteLine();
        w.WriteLine($"machine: {machine}");
        Column[] all =
        [
            new("workload", r => r.Workload, Always: true),
            new("system", r => r.System, Always: true),
            new("writers", r => r.Writers?.ToString(CultureInfo.InvariantCulture) ?? "1", Always: true),
            new("ops/s", r => N(r.OpsPerSec, "N0"), Always: true),
            new("p50 us", r => N(r.P50Us, "N1"), Always: true),
            new("p99 us", r => N(r.P99Us, "N1"), Always: true),
            new("log B/op", r => Opt(r.LogBytesPerOp, "N1")),
            new("fsync/s", r => Opt(r.FsyncsPerSec, "N0")),
            new("ops/rec", r => Opt(r.OpsPerRecord, "N1")),
            new("alloc B/op", r => Opt(r.AllocBytesPerOp, "N3")),
            new($"x {baseline}", r => Ratio(results, r, baseline) is double x ? x.ToString("N2", CultureInfo.InvariantCulture) + "x" : "-", Always: true),
        ];
        var columns = all.Where(c => c.Always || results.Any(r => c.Cell(r) is not null)).ToArray();
        var rows = new List<string[]> { columns.Select(c => c.Head).ToArray() };
        foreach (var r in results) rows.Add(columns.Select(c => c.Cell(r) ?? "-").ToArray());
        var width = new int[columns.Length];
        foreach (var row in rows)
            for (int i = 0; i < row.Length; i++) width[i] = Math.Max(width[i], row[i].Length);
        for (int k = 0; k < rows.Count; k++)
        {
            var sb = new StringBuilder();
            for (int i = 0; i < columns.Length; i++)
            {
                if (i > 0) sb.Append("  ");
                sb.Append(i < 2 ? rows[k][i].PadRight(width[i]) : rows[k][i].PadLeft(width[i]));
            }
            w.WriteLine(sb.ToString().TrimEnd());
            if (k == 0) w.WriteLine(new string('-', sb.Length));
        }
        foreach (var r in results)
        {
            if (r.Notes.Count == 0 && r.Threads is null) continue;
            w.WriteLine();
            w.WriteLine($"{r.Workload} / {r.System}" + (r.Writers is int n ? $" / {n} writers" : ""));
            foreach (var note in r.Notes) w.WriteLine($"  {note}");
            if (RatiosByRound(results, r, baseline) is { } byRound)
                w.WriteLine($"  x {baseline} by round (each round's own pair): {string.Join(", ", byRound.Select(x => x.ToString("N2", CultureInfo.InvariantCulture) + "x"))}; " +
                    $"their median {MedianOf(byRound).ToString("N2", CultureInfo.InvariantCulture)}x (the table's x {baseline} is of the two median rows, which may come from different rounds)");
            if (r.Threads is { } threads)
            {
                w.WriteLine("  cpu in cores (run-queue wait): " + string.Join(", ",
                    threads.Where(t => t.CpuShare >= 0.005).Select(t => t.Name == ThreadCpu.OtherProcesses ? $"{t.Name} {t.CpuShare:F2}" : $"{t.Name} {t.CpuShare:F2} ({t.WaitShare:F2})")));
                if (threads.FirstOrDefault(t => t.Name == ThreadCpu.OtherProcesses) is { CpuShare: > 0.25 } busy)
                    w.WriteLine($"  WARNING: other processes used {busy.CpuShare:F2} cores during the window: this row is not a clean measurement");
            }
        }
    }

    /// <summary>Ops/s of <paramref name="r"/> over the baseline's for the same workload, if both exist.</summary>
    public static double? Ratio(IReadOnlyList<BenchResult> results, BenchResult r, string baseline)
    {
        if (r.System == baseline) return null;
        var b = results.FirstOrDefault(x => x.System == baseline && x.Workload == r.Workload);
        return b is null || b.OpsPerSec <= 0 ? null : r.OpsPerSec / b.OpsPerSec;
    }

    /// <summary>
    /// With rounds: the ratio of <paramref name="r"/>'s rate to the baseline's in each round (the systems of a round ran
    /// in the same spell of the host), or null without rounds or for the baseline itself.
    /// </summary>
    public static double[]? RatiosByRound(IReadOnlyList<BenchResult> results, BenchResult r, string baseline)
    {
        if (r.System == baseline || r.RoundRates is not { } mine) return null;
        var b = results.FirstOrDefault(x => x.System == baseline && x.Workload == r.Workload);
        if (b?.RoundRates is not { } theirs || theirs.Count != mine.Count) return null;
        return mine.Select((x, i) => theirs[i] > 0 ? x / theirs[i] : double.NaN).ToArray();
    }

    /// <summary>The median by the bench's rule: the lower of the two middle values for an even count.</summary>
    public static double MedianOf(IReadOnlyList<double> xs) => xs.Order().ElementAt((xs.Count - 1) / 2);

    public static void WriteJson(string path, MachineInfo machine, RunInfo run, IReadOnlyList<BenchResult> results, string baseline)
    {
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null) Directory.CreateDirectory(folder);
        using var stream = File.Create(path);
        using var j = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        j.WriteStartArray();
        foreach (var r in results)
        {
            j.WriteStartObject();
            j.WriteString("workload", r.Workload);
            j.WriteString("system", r.System);
            Number(j, "ops_per_sec", r.OpsPerSec);
            Number(j, "p50_us", r.P50Us);
            Number(j, "p99_us", r.P99Us);
            if (r.Writers is int writers) j.WriteNumber("writers", writers);
            j.WriteNumber("ops", r.Ops);
            Number(j, "seconds", r.Seconds);
            Number(j, "log_bytes_per_op", r.LogBytesPerOp);
            Number(j, "fsyncs_per_sec", r.FsyncsPerSec);
            Number(j, "ops_per_record", r.OpsPerRecord);
            Number(j, "avg_sync_us", r.AvgSyncUs);
            Number(j, "alloc_bytes_per_op", r.AllocBytesPerOp);
            Number(j, "loop_alloc_bytes_per_op", r.LoopAllocBytesPerOp);
            string ratioName = "ratio_vs_" + baseline.Replace('-', '_');
            Number(j, ratioName, Ratio(results, r, baseline));
            if (r.Round is int round) j.WriteNumber("round", round);
            if (r.RoundRates is { } rates)
            {
                j.WriteStartArray("ops_per_sec_by_round");
                foreach (var x in rates) j.WriteNumberValue(Math.Round(x, 3));
                j.WriteEndArray();
            }
            if (RatiosByRound(results, r, baseline) is { } byRound)
            {
                j.WriteStartArray(ratioName + "_by_round");
                foreach (var x in byRound) j.WriteNumberValue(Math.Round(x, 3));
                j.WriteEndArray();
                Number(j, ratioName + "_median_of_rounds", MedianOf(byRound));
            }
            if (r.Extra is { } extra)
                foreach (var (name, value) in extra) Number(j, name, value);
            if (r.Threads is { } threads)
            {
                j.WriteStartObject("thread_cpu_cores");
                foreach (var t in threads) Number(j, t.Name, Math.Round(t.CpuShare, 3));
                j.WriteEndObject();
            }
            j.WriteStartObject("machine");
            j.WriteString("cpu", machine.Cpu);
            j.WriteNumber("cores", machine.Cores);
            j.WriteNumber("ram_bytes", machine.RamBytes);
            j.WriteString("os", machine.Os);
            j.WriteString("dotnet", machine.Dotnet);
            j.WriteString("filesystem", machine.FileSystem);
            j.WriteEndObject();
            j.WriteStartObject("run");
            j.WriteString("command_line", run.CommandLine);
            if (run.Commit is { } commit) j.WriteString("commit", commit);
            else j.WriteNull("commit");
            if (run.SourceDirty is bool dirty) j.WriteBoolean("source_dirty", dirty);
            else j.WriteNull("source_dirty");
            j.WriteString("started_utc", run.Started.ToString("o", CultureInfo.InvariantCulture));
            j.WriteStartObject("settings");
            foreach (var (name, value) in run.Settings)
            {
                switch (value)
                {
                    case bool b: j.WriteBoolean(name, b); break;
                    case int i: j.WriteNumber(name, i); break;
                    case double d: Number(j, name, d); break;
                    default: j.WriteString(name, value.ToString()); break;
                }
            }
            j.WriteEndObject();
            j.WriteEndObject();
            j.WriteStartArray("notes");
            foreach (var note in r.Notes) j.WriteStringValue(note);
            j.WriteEndArray();
            j.WriteEndObject();
        }
        j.WriteEndArray();
    }

    private static void Number(Utf8JsonWriter j, string name, double? value)
    {
        if (value is not double v) return;
        if (double.IsFinite(v)) j.WriteNumber(name, Math.Round(v, 3));
        else j.WriteNull(name);
    }

    private static string? Opt(double? v, string format) => v is null ? null : N(v, format);

    private static string N(double? v, string format) =>
        v is double d && double.IsFinite(d) ? d.ToString(format, CultureInfo.InvariantCulture) : "-";
}
