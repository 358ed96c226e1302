using Motr.Be.Segments;

namespace Motr.Crash.Tests;

/// <summary>
/// What a crash test's model knows about one segment of a recorded run, for <see cref="CrashImageVerifier"/>: the
/// last closed transaction, whether a recovered segment is exactly the state after a given prefix of them, and the
/// payload each set. <see cref="SegmentModel"/> (raw data-area workload) and <see cref="BTreeSegmentModel"/> (b+tree
/// workload) implement it.
/// </summary>
public interface ISegmentOracle
{
    /// <summary>Id of the last closed transaction.</summary>
    long LastId { get; }

    /// <summary>
    /// Null if <paramref name="seg"/> (just recovered, with no owner) holds exactly the state after the closed
    /// transactions up to and including id <paramref name="j"/> (0 &lt;= j &lt;= <see cref="LastId"/>); otherwise what differs.
    /// </summary>
    string? Verify(Segment seg, long j);

    /// <summary>The payload transaction <paramref name="id"/> set, or null if it set none (or is unknown).</summary>
    byte[]? PayloadOf(long id);
}

/// <summary>
/// Marker tag a workload puts into the <see cref="Motr.Be.Storage.SimStorage"/> op log when the engine reported
/// transaction <paramref name="TxId"/> of segment index <paramref name="Segment"/> (0-based) persistent.
/// </summary>
public sealed record PersistedMark(int Segment, long TxId);

/// <summary>
/// One closed transaction as the model sees it: the bytes of each captured region at close, its payload, the
/// named root (segment dictionary entry) it set, if any, and the segment's size after it (it may have grown it).
/// </summary>
public sealed record ClosedTx(long Id, IReadOnlyList<(long Offset, byte[] Bytes)> Changes, byte[]? Payload, (string Name, long Value)? Root, long Size);

/// <summary>
/// The model of one segment's data area [<see cref="DataStart"/>, size): a starting state (after transaction
/// <see cref="BaseId"/>) and the closed transactions after it, in id order, so the expected bytes after any prefix j
/// of closed transactions can be computed, and the named roots of the segment dictionary after it. Aborted transactions
/// are not in the model: they change nothing.
/// </summary>
public sealed class SegmentModel : ISegmentOracle
{
    /// <summary>First byte of the data area (page 0 is the segment header).</summary>
    public const long DataStart = 4096;

    private readonly byte[] _base;
    private readonly List<ClosedTx> _txs = new();
    private readonly List<byte[]?> _states = new();   // _states[i]: state after BaseId + i, computed lazily
    private readonly Dictionary<string, long> _baseRoots;
    private readonly object _gate = new();

    private readonly long _baseSize;

    /// <param name="initial">The data area after transaction <paramref name="baseId"/>, up to the segment's largest size (zeros past its size).</param>
    /// <param name="initialSize">The segment's size after transaction <paramref name="baseId"/>.</param>
    /// <param name="baseId">Id of the last transaction <paramref name="initial"/> includes.</param>
    /// <param name="parent">The model that holds transactions up to <paramref name="baseId"/> (for payload checks and roots), if any.</param>
    public SegmentModel(byte[] initial, long initialSize, long baseId = 0, SegmentModel? parent = null)
    {
        _base = initial;
        _baseSize = initialSize;
        BaseId = baseId;
        Parent = parent;
        _baseRoots = parent is null ? new() : parent.RootsAfter(baseId);
        _states.Add(initial);
    }

    /// <summary>A model continuing <paramref name="parent"/> after its prefix <paramref name="baseId"/> (a recovered state).</summary>
    public static SegmentModel After(SegmentModel parent, long baseId) =>
        new(parent.StateAfter(baseId), parent.SizeAfter(baseId), baseId, parent);

    /// <summary>The segment's size after the closed transactions up to and including id <paramref name="j"/>.</summary>
    public long SizeAfter(long j)
    {
        lock (_gate)
        {
            if (j < BaseId || j > BaseId + _txs.Count)
                throw new ArgumentOutOfRangeException(nameof(j), $"model holds txs {BaseId}..{BaseId + _txs.Count}, not {j}");
            return j == BaseId ? _baseSize : _txs[(int)(j - BaseId - 1)].Size;
        }
    }

    /// <summary>Id of the last transaction the starting state includes.</summary>
    public long BaseId { get; }

    /// <summary>The model holding the transactions up to <see cref="BaseId"/>.</summary>
    public SegmentModel? Parent { get; }

    /// <summary>Id of the last closed transaction.</summary>
    public long LastId
    {
        get { lock (_gate) return BaseId + _txs.Count; }
    }


    /// <summary>Records a closed transaction; ids must be consecutive.</summary>
    public void Add(ClosedTx tx)
    {
        lock (_gate)
        {
            long expected = BaseId + _txs.Count + 1;
            if (tx.Id != expected)
                throw new InvalidOperationException($"model: tx ids must be consecutive per segment: got {tx.Id}, expected {expected}");
            _txs.Add(tx);
            _states.Add(null);
        }
    }

    /// <summary>The transaction with id <paramref name="id"/>, looking in the parent for ids up to <see cref="BaseId"/>.</summary>
    public ClosedTx? Find(long id)
    {
        if (id <= BaseId) return Parent?.Find(id);
        lock (_gate) return id - BaseId <= _txs.Count ? _txs[(int)(id - BaseId - 1)] : null;
    }

    /// <summary>The data area after the closed transactions up to and including id <paramref name="j"/> (do not change it).</summary>
    public byte[] StateAfter(long j)
    {
        lock (_gate)
        {
            if (j < BaseId || j > BaseId + _txs.Count)
                throw new ArgumentOutOfRangeException(nameof(j), $"model holds txs {BaseId}..{BaseId + _txs.Count}, not {j}");
            int target = (int)(j - BaseId);
            int from = target;
            while (_states[from] is null) from--;
            var state = (byte[])_states[from]!.Clone();
            for (int i = from + 1; i <= target; i++)
            {
                foreach (var (offset, bytes) in _txs[i - 1].Changes)
                    bytes.CopyTo(state, (int)(offset - DataStart));
                if (i % 8 == 0 || i == target) _states[i] = i == target ? state : (byte[])state.Clone();
            }
            return state;
        }
    }

    /// <summary>The named roots after the closed transactions up to and including id <paramref name="j"/>.</summary>
    public Dictionary<string, long> RootsAfter(long j)
    {
        lock (_gate)
        {
            if (j < BaseId || j > BaseId + _txs.Count)
                throw new ArgumentOutOfRangeException(nameof(j), $"model holds txs {BaseId}..{BaseId + _txs.Count}, not {j}");
            var roots = new Dictionary<string, long>(_baseRoots);
            for (int i = 0; i < j - BaseId; i++)
                if (_txs[i].Root is { } r) roots[r.Name] = r.Value;
            return roots;
        }
    }

    /// <inheritdoc />
    public byte[]? PayloadOf(long id) => Find(id)?.Payload;

    /// <inheritdoc />
    public string? Verify(Segment seg, long j)
    {
        if (seg.Size != SizeAfter(j))
            return $"segment {seg.Id} recovered to prefix {j} with size {seg.Size}, but its size after tx {j} was {SizeAfter(j)}";
        var actual = seg.Bytes(DataStart, (int)(seg.Size - DataStart));
        var expected = StateAfter(j);
        if (!actual.SequenceEqual(expected.AsSpan(0, actual.Length))) return $"segment {seg.Id}: {Describe(actual, expected, j)}";
        var roots = seg.Roots().ToDictionary(kv => kv.Key, kv => kv.Value);
        var expectedRoots = RootsAfter(j);
        if (roots.Count != expectedRoots.Count || roots.Any(kv => !expectedRoots.TryGetValue(kv.Key, out long v) || v != kv.Value))
            return $"segment {seg.Id}: the named roots after prefix {j} are [{string.Join(", ", roots.Select(kv => $"{kv.Key}={kv.Value}"))}], " +
                $"expected [{string.Join(", ", expectedRoots.Select(kv => $"{kv.Key}={kv.Value}"))}]";
        return null;
    }

    private string Describe(ReadOnlySpan<byte> actual, byte[] expected, long j)
    {
        int first = -1, count = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (actual[i] == expected[i]) continue;
            if (first < 0) first = i;
            count++;
        }
        var matches = PrefixesMatching(actual);
        return $"recovered prefix {j} (LastTxId), but the data area differs from the state after tx {j} in {count} bytes, " +
            $"first at segment offset 0x{first + DataStart:X} (recovered 0x{actual[first]:X2}, expected 0x{expected[first]:X2}); " +
            (matches.Count == 0 ? "it matches no prefix of the closed txs" : $"it matches the state after tx {string.Join(" / ", matches)}");
    }

    /// <summary>
    /// The prefixes j (at most <paramref name="max"/>) whose state equals <paramref name="data"/>: for failure messages
    /// ("the data is the state after tx 37, but the segment says 40").
    /// </summary>
    public List<long> PrefixesMatching(ReadOnlySpan<byte> data, int max = 4)
    {
        var found = new List<long>();
        for (long j = BaseId; j <= LastId && found.Count < max; j++)
            if (data.SequenceEqual(StateAfter(j).AsSpan(0, data.Length))) found.Add(j);
        return found;
    }
}
