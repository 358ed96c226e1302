using System.Collections.Concurrent;
using System.Text;
using Motr.Be;
using Motr.Be.Storage;

namespace Motr.Crash.Tests;

/// <summary>What recovering one crash image gave.</summary>
/// <param name="Prefix">Per segment: the recovered prefix j (the segment's LastTxId).</param>
/// <param name="Failure">Null if the image satisfied invariant 5, else what was wrong (with seed, crash point, variant).</param>
/// <param name="TornTail">Recovery cut a torn log tail.</param>
/// <param name="RecordsReplayed">Log records recovery replayed.</param>
public sealed record CrashOutcome(long[] Prefix, string? Failure, bool TornTail, long RecordsReplayed);

/// <summary>
/// Checks DESIGN invariant 5 on crash images of one recorded run: recovery succeeds, and each segment holds exactly
/// the state after a prefix j of its closed transactions (j = its LastTxId after recovery) that includes every
/// transaction marked persistent before the crash point (and every transaction a previous recovery exposed).
/// </summary>
public sealed class CrashImageVerifier
{
    private readonly string _label;
    private readonly ISegmentOracle[] _models;
    private readonly Func<IStorage, Action<RecoveredPayload>, Action<string>, DomainOptions> _options;
    private readonly SimStorage _recorded;
    private readonly int _seed;
    private readonly long[] _floor;
    private readonly long[][] _markedBefore;   // [segment][k]: largest id marked persistent in ops [0, k)
    private readonly ConcurrentQueue<string> _failures = new();
    private readonly ConcurrentDictionary<string, byte> _prefixes = new();
    private int _checked, _tornTails, _replayed, _saved;

    /// <param name="label">Names the test and run in messages.</param>
    /// <param name="models">Per segment, the model of the recorded run.</param>
    /// <param name="recorded">The storage whose op log the crash images come from (holds the <see cref="PersistedMark"/>s).</param>
    /// <param name="seed">The seed crash images are made with (and the workload ran with), for messages.</param>
    /// <param name="floor">Per segment, a prefix every recovery must include (what a previous recovery exposed), or null.</param>
    /// <param name="options">Domain options to recover an image with (given the image, the payload and the warning callbacks);
    /// null: <see cref="SimWorkload.Options"/>.</param>
    public CrashImageVerifier(string label, ISegmentOracle[] models, SimStorage recorded, int seed, long[]? floor = null,
        Func<IStorage, Action<RecoveredPayload>, Action<string>, DomainOptions>? options = null)
    {
        _options = options ?? ((storage, onPayload, onWarning) => SimWorkload.Options(storage, onPayload: onPayload, onWarning: onWarning));
        _label = label;
        _models = models;
        _recorded = recorded;
        _seed = seed;
        _floor = floor ?? new long[models.Length];
        int ops = recorded.OpCount;
        _markedBefore = new long[models.Length][];
        for (int s = 0; s < models.Length; s++) _markedBefore[s] = new long[ops + 1];
        var max = new long[models.Length];
        for (int k = 0; k < ops; k++)
        {
            for (int s = 0; s < models.Length; s++) _markedBefore[s][k] = max[s];
            if (recorded.GetOp(k) is { Kind: SimOpKind.Marker, Tag: PersistedMark m }) max[m.Segment] = Math.Max(max[m.Segment], m.TxId);
        }
        for (int s = 0; s < models.Length; s++) _markedBefore[s][ops] = max[s];
    }

    /// <summary>Crash images checked.</summary>
    public int Checked => _checked;

    /// <summary>Distinct recovered prefixes (over all segments together).</summary>
    public int DistinctPrefixes => _prefixes.Count;

    /// <summary>Images whose recovery cut a torn log tail.</summary>
    public int TornTails => _tornTails;

    /// <summary>Images whose recovery replayed at least one log record.</summary>
    public int Replayed => _replayed;

    /// <summary>Failures so far.</summary>
    public IReadOnlyCollection<string> Failures => _failures;

    /// <summary>The largest transaction id of segment <paramref name="s"/> marked persistent before crash point <paramref name="opCount"/>.</summary>
    public long MarkedBefore(int s, int opCount) => _markedBefore[s][opCount];

    /// <summary>Recovers <paramref name="cp"/>'s image (which it changes) and checks it; disposes the domain.</summary>
    public async Task<CrashOutcome> VerifyAsync(CrashPoint cp)
    {
        var payloads = new ConcurrentQueue<RecoveredPayload>();
        var warnings = new ConcurrentQueue<string>();
        var prefix = new long[_models.Length];
        string where = $"{_label}, seed {_seed}: {cp}{LastOp(cp.OpCount)}";
        Domain domain;
        try
        {
            domain = Domain.Open(_options(cp.Image, payloads.Enqueue, warnings.Enqueue));
        }
        catch (Exception e)
        {
            return Fail(cp, prefix, $"{where}: recovery threw {e.GetType().Name}: {e.Message}", null);
        }
        string? failure = null;
        long records = domain.Recovery.RecordsReplayed;
        bool torn = domain.Recovery.TornTail != null;
        try
        {
            if (domain.Segments.Count != _models.Length)
                failure = $"{where}: recovered {domain.Segments.Count} segments, expected {_models.Length}";
            for (int s = 0; s < _models.Length && failure is null; s++)
            {
                var seg = domain.Segments[s];
                var model = _models[s];
                long j = seg.LastTxId;
                prefix[s] = j;
                long marked = _markedBefore[s][cp.OpCount];
                long need = Math.Max(marked, _floor[s]);
                if (j < need)
                    failure = $"{where}: segment {seg.Id} recovered to prefix {j}, but tx {marked} was reported persistent before the crash" +
                        (_floor[s] > marked ? $" and an earlier recovery had exposed tx {_floor[s]}" : "");
                else if (j > model.LastId)
                    failure = $"{where}: segment {seg.Id} recovered to prefix {j}, but only {model.LastId} txs were ever closed";
                else
                {
                    try
                    {
                        if (model.Verify(seg, j) is { } problem) failure = $"{where}: {problem}";
                    }
                    catch (Exception e)
                    {
                        failure = $"{where}: segment {seg.Id}: checking the state after prefix {j} threw {e.GetType().Name}: {e.Message}";
                    }
                }
            }
            if (failure is null)
            {
                foreach (var p in payloads)
                {
                    int s = (int)p.SegmentId - 1;
                    if (s < 0 || s >= _models.Length) { failure = $"{where}: recovered a payload of unknown segment {p.SegmentId}"; break; }
                    if (p.TxId > prefix[s])
                    {
                        failure = $"{where}: recovered the payload of tx {p.TxId} of segment {p.SegmentId}, past the recovered prefix {prefix[s]}";
                        break;
                    }
                    var set = _models[s].PayloadOf(p.TxId);
                    if (set is null || !p.Payload.Span.SequenceEqual(set))
                    {
                        failure = $"{where}: the payload recovered for tx {p.TxId} of segment {p.SegmentId} is not the one it set " +
                            $"({p.Payload.Length} bytes; the tx set {(set is null ? "none" : set.Length + " bytes")})";
                        break;
                    }
                }
            }
        }
        finally
        {
            try { await domain.DisposeAsync(); }
            catch (Exception e) { failure ??= $"{where}: closing the recovered domain threw {e.GetType().Name}: {e.Message}"; }
        }
        if (failure != null) return Fail(cp, prefix, failure, domain.Recovery.ToString());
        Interlocked.Increment(ref _checked);
        if (torn) Interlocked.Increment(ref _tornTails);
        if (records > 0) Interlocked.Increment(ref _replayed);
        _prefixes.TryAdd(string.Join(',', prefix), 0);
        return new CrashOutcome(prefix, null, torn, records);
    }

    private CrashOutcome Fail(CrashPoint cp, long[] prefix, string failure, string? report)
    {
        Interlocked.Increment(ref _checked);
        string msg = failure + (report is null ? "" : $" [recovery: {report}]");
        if (Interlocked.Increment(ref _saved) <= 3) msg += $" [image saved to {Save(cp)}]";
        _failures.Enqueue(msg);
        return new CrashOutcome(prefix, msg, false, 0);
    }

    private string LastOp(int opCount)
    {
        if (opCount == 0) return " (before any op)";
        // The last device op before the crash (markers are skipped: they are not crash points).
        int i = opCount - 1;
        return $" (last op #{i}: {_recorded.GetOp(i)})";
    }

    /// <summary>Writes the crash image (rebuilt, untouched by recovery), the expected data areas and the op log to a folder.</summary>
    private string Save(CrashPoint cp)
    {
        try
        {
            string dir = Path.Combine(Path.GetTempPath(), "motr-crash-failures",
                $"{Sanitize(_label)}-seed{_seed}-op{cp.OpCount}-{cp.Variant}-{Environment.ProcessId}");
            Directory.CreateDirectory(dir);
            var image = _recorded.CrashImage(cp.OpCount, cp.Variant, _seed);
            foreach (var name in image.List()) File.WriteAllBytes(Path.Combine(dir, name), image.ReadAll(name));
            var log = new StringBuilder();
            for (int i = 0; i < _recorded.OpCount; i++) log.Append(i).Append(i < cp.OpCount ? "   " : " X ").AppendLine(_recorded.GetOp(i).ToString());
            File.WriteAllText(Path.Combine(dir, "oplog.txt"), log.ToString());
            for (int s = 0; s < _models.Length; s++)
                File.WriteAllText(Path.Combine(dir, $"expected-seg{s + 1}.txt"),
                    $"marked persistent before the crash: {_markedBefore[s][cp.OpCount]}; closed: {_models[s].LastId}; floor: {_floor[s]}\n");
            return dir;
        }
        catch (Exception e)
        {
            return $"(could not save: {e.Message})";
        }
    }

    private static string Sanitize(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s) sb.Append(char.IsLetterOrDigit(c) ? c : '-');
        return sb.ToString();
    }
}
