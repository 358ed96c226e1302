using System.Diagnostics;
using System.Text;

namespace Motr.Bench.Macro;

/// <summary>
/// Throughput and log use sampled every <see cref="Step"/> across the window, so a stall (a full
/// log waiting for placing, a checkpoint) shows instead of vanishing into an average.
/// </summary>
internal sealed class Timeline
{
    public static readonly TimeSpan Step = TimeSpan.FromMilliseconds(500);

    private readonly List<(double Seconds, double OpsPerSec, long LogUsed)> _points = new();

    /// <summary>Waits <paramref name="duration"/>, reading <paramref name="read"/> (ops completed so far, log bytes in use) every step.</summary>
    public static async Task<Timeline> RecordAsync(TimeSpan duration, Func<(long Ops, long LogUsed)> read)
    {
        var t = new Timeline();
        long start = Stopwatch.GetTimestamp(), last = start;
        long step = (long)(Step.TotalSeconds * Stopwatch.Frequency);
        long end = start + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        var (lastOps, _) = read();
        for (long target = Math.Min(start + step, end); ; target = Math.Min(target + step, end))
        {
            long now = Stopwatch.GetTimestamp();
            if (target > now) await Task.Delay(TimeSpan.FromSeconds((target - now) / (double)Stopwatch.Frequency));
            now = Stopwatch.GetTimestamp();
            var (ops, used) = read();
            double dt = (now - last) / (double)Stopwatch.Frequency;
            t._points.Add(((now - start) / (double)Stopwatch.Frequency, dt > 0 ? (ops - lastOps) / dt : 0, used));
            last = now;
            lastOps = ops;
            if (target >= end) break;
        }
        return t;
    }

    /// <summary>One line: ops/s of each step (thousands) and the log use at its end.</summary>
    public string Describe()
    {
        var sb = new StringBuilder($"timeline every {Step.TotalSeconds:0.#} s, k tx/s [log MiB used]:");
        foreach (var p in _points) sb.Append($" {p.OpsPerSec / 1000:F0}[{p.LogUsed >> 20}]");
        return sb.ToString();
    }
}
