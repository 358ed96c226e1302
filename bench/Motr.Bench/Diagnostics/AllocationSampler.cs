using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace Motr.Bench.Diagnostics;

/// <summary>
/// Samples what the process allocates, by type, from the runtime's GCAllocationTick events (one about
/// every 100 KB allocated, naming the type that crossed the mark). A diagnostic for `--alloc-sample`:
/// the listener itself allocates, so rows measured with it on overstate their allocation.
/// </summary>
internal sealed class AllocationSampler : EventListener
{
    private readonly ConcurrentDictionary<string, long> _bytes = new();
    private volatile bool _recording;

    public void Start() => _recording = true;

    public void Stop() => _recording = false;

    /// <summary>Sampled bytes by type, largest first.</summary>
    public List<(string Type, long Bytes)> Top(int n) =>
        _bytes.OrderByDescending(kv => kv.Value).Take(n).Select(kv => (kv.Key, kv.Value)).ToList();

    /// <summary>A row's note: the eight types sampled most, in bytes per <paramref name="unit"/> over <paramref name="ops"/> of them.</summary>
    public string Note(long ops, string unit) =>
        $"alloc sampled by type, B/{unit} (listener on): " +
        string.Join(", ", Top(8).Select(x => $"{x.Type} {x.Bytes / (double)Math.Max(1, ops):N1}"));

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
            EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1 /* GC */);
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (!_recording || e.EventName is null || !e.EventName.StartsWith("GCAllocationTick", StringComparison.Ordinal) || e.PayloadNames is null) return;
        int t = e.PayloadNames.IndexOf("TypeName");
        int a = e.PayloadNames.IndexOf("AllocationAmount64");
        if (a < 0) a = e.PayloadNames.IndexOf("AllocationAmount");
        if (t < 0 || a < 0 || e.Payload is null) return;
        string type = e.Payload[t] as string ?? "?";
        long amount = Convert.ToInt64(e.Payload[a], System.Globalization.CultureInfo.InvariantCulture);
        _bytes.AddOrUpdate(type, amount, (_, v) => v + amount);
    }
}
