namespace Motr.Be.Storage;

public sealed partial class SimStorage
{
    /// <summary>
    /// The disk a power failure right after the first <paramref name="opCount"/> ops of the log would leave, as a
    /// NEW independent storage (its content all durable, its op log empty, no faults).
    /// </summary>
    /// <remarks>
    /// Per file, every write and length change before the file's last flush (within the prefix) is on disk. The
    /// later ("unsynced") ones are treated as <paramref name="variant"/> says; a torn write keeps a random subset of
    /// the 512-byte sectors it touches (sectors aligned to absolute file offsets), and a kept sector past the old end
    /// extends the file, zero-filling any gap. Creates, renames and deletes in the prefix are all on disk.
    /// All randomness comes from <paramref name="seed"/>, <paramref name="opCount"/> and <paramref name="variant"/>,
    /// so the same arguments give the same image, and <see cref="EnumerateCrashImages"/> with the same seed yields
    /// this very image at this point.
    /// </remarks>
    public SimStorage CrashImage(int opCount, CrashVariant variant, int seed)
    {
        Replay replay;
        SimOp[] ops;
        lock (_gate)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(opCount);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(opCount, _ops.Count);
            replay = new Replay(_base);
            ops = _ops.GetRange(0, opCount).ToArray();
        }
        for (int i = 0; i < ops.Length; i++) replay.Apply(ops[i]);
        return replay.Build(variant, seed, opCount);
    }

    /// <summary>
    /// Every crash image of the op log as it is when enumeration starts: for each k in 0..<see cref="OpCount"/>
    /// (inclusive) where k is 0 or op k-1 is not a <see cref="SimOpKind.Marker"/> (a marker changes nothing on disk),
    /// one <see cref="CrashPoint"/> per variant in <paramref name="variants"/>, equal to
    /// <see cref="CrashImage"/>(k, variant, <paramref name="seed"/>). When no file has unsynced operations at k, every
    /// variant would give the same image, so only the first variant is yielded for that k.
    /// </summary>
    /// <remarks>
    /// Built incrementally (a running durable state and per-file lists of unsynced ops, one pass over the log);
    /// images share unchanged file content copy-on-write, so enumerating thousands of points over megabyte files is
    /// cheap. Ops appended after enumeration starts are not seen.
    /// </remarks>
    public IEnumerable<CrashPoint> EnumerateCrashImages(IReadOnlyList<CrashVariant> variants, int seed)
    {
        ArgumentNullException.ThrowIfNull(variants);
        Replay replay;
        SimOp[] ops;
        lock (_gate)
        {
            replay = new Replay(_base);
            ops = _ops.ToArray();
        }
        return Enumerate(replay, ops, variants, seed);
    }

    private static IEnumerable<CrashPoint> Enumerate(Replay replay, SimOp[] ops, IReadOnlyList<CrashVariant> variants, int seed)
    {
        if (variants.Count == 0) yield break;
        for (int k = 0; k <= ops.Length; k++)
        {
            if (k > 0) replay.Apply(ops[k - 1]);
            if (k > 0 && ops[k - 1].Kind == SimOpKind.Marker) continue;
            int n = replay.PendingOps == 0 ? 1 : variants.Count;
            for (int v = 0; v < n; v++)
                yield return new CrashPoint(k, variants[v], replay.Build(variants[v], seed, k));
        }
    }

    /// <summary>The disk state a replay of the op log has reached: durable content and unsynced ops per file.</summary>
    private sealed class Replay
    {
        private readonly Dictionary<string, long> _names = new(StringComparer.Ordinal);
        private readonly Dictionary<long, ReplayFile> _files = new();

        public Replay(List<BaseFile> initial)
        {
            foreach (var f in initial)
            {
                _names.Add(f.Name, f.Id);
                _files.Add(f.Id, new ReplayFile(f.Content.Share()));
            }
        }

        /// <summary>Unsynced writes and length changes of all linked files.</summary>
        public int PendingOps { get; private set; }

        public void Apply(in SimOp op)
        {
            ReplayFile? file;
            switch (op.Kind)
            {
                case SimOpKind.Write:
                case SimOpKind.SetLength:
                    // Ops on a deleted or replaced (unlinked) file reach no image.
                    if (_files.TryGetValue(op.FileId, out file))
                    {
                        file.Pending.Add(op);
                        PendingOps++;
                    }
                    break;
                case SimOpKind.Flush:
                    if (_files.TryGetValue(op.FileId, out file))
                    {
                        for (int i = 0; i < file.Pending.Count; i++) ApplyWhole(file.Durable, file.Pending[i]);
                        PendingOps -= file.Pending.Count;
                        file.Pending.Clear();
                    }
                    break;
                case SimOpKind.Create:
                    _names.Add(op.File, op.FileId);
                    _files.Add(op.FileId, new ReplayFile(Buffer.Empty()));
                    break;
                case SimOpKind.Rename:
                    if (_names.Remove(op.NewName!, out long replaced)) Unlink(replaced);
                    _names.Remove(op.File);
                    _names.Add(op.NewName!, op.FileId);
                    break;
                case SimOpKind.Delete:
                    _names.Remove(op.File);
                    Unlink(op.FileId);
                    break;
            }
        }

        private void Unlink(long id)
        {
            if (_files.Remove(id, out var file)) PendingOps -= file.Pending.Count;
        }

        public SimStorage Build(CrashVariant variant, int seed, int opCount)
        {
            var rng = new Rng(seed, opCount, variant);
            var names = new List<string>(_names.Keys);
            names.Sort(StringComparer.Ordinal);
            var files = new List<KeyValuePair<string, Buffer>>(names.Count);
            foreach (var name in names)
            {
                var file = _files[_names[name]];
                var content = file.Durable.Share();
                if (file.Pending.Count > 0) ApplyPending(content, file.Pending, variant, ref rng);
                files.Add(new(name, content));
            }
            return new SimStorage(files);
        }

        private static void ApplyPending(Buffer content, List<SimOp> pending, CrashVariant variant, ref Rng rng)
        {
            switch (variant)
            {
                case CrashVariant.DropUnsynced:
                    return;
                case CrashVariant.KeepUnsynced:
                    for (int i = 0; i < pending.Count; i++) ApplyWhole(content, pending[i]);
                    return;
                case CrashVariant.TornLast:
                    int last = pending.Count - 1;
                    while (last >= 0 && pending[last].Kind != SimOpKind.Write) last--;
                    for (int i = 0; i < pending.Count; i++)
                    {
                        if (i == last) ApplyTorn(content, pending[i], ref rng);
                        else ApplyWhole(content, pending[i]);
                    }
                    return;
                case CrashVariant.Random:
                    for (int i = 0; i < pending.Count; i++)
                    {
                        var op = pending[i];
                        int choice = op.Kind == SimOpKind.Write ? rng.Below(3) : rng.Below(2);
                        if (choice == 1) ApplyWhole(content, op);
                        else if (choice == 2) ApplyTorn(content, op, ref rng);
                    }
                    return;
                default:
                    throw new ArgumentOutOfRangeException(nameof(variant), variant, "unknown crash variant");
            }
        }

        private static void ApplyWhole(Buffer content, in SimOp op)
        {
            if (op.Kind == SimOpKind.Write) content.Write(op.Offset, op.Data.Span);
            else content.SetLength(op.Length);
        }

        /// <summary>Applies each 512-byte sector (aligned to absolute offsets) of a write with probability 1/2.</summary>
        private static void ApplyTorn(Buffer content, in SimOp op, ref Rng rng)
        {
            var data = op.Data.Span;
            long start = op.Offset;
            long end = op.Offset + data.Length;
            while (start < end)
            {
                long sectorEnd = Math.Min(end, (start / SectorSize + 1) * SectorSize);
                if (rng.Coin())
                    content.Write(start, data.Slice((int)(start - op.Offset), (int)(sectorEnd - start)));
                start = sectorEnd;
            }
        }
    }

    private sealed class ReplayFile(Buffer durable)
    {
        public Buffer Durable { get; } = durable;
        public List<SimOp> Pending { get; } = new();
    }

    /// <summary>SplitMix64, seeded from (seed, op count, variant): deterministic across runtimes.</summary>
    private struct Rng
    {
        private ulong _state;

        public Rng(int seed, int opCount, CrashVariant variant)
        {
            _state = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL
                ^ ((ulong)(uint)opCount << 20) * 0xC2B2AE3D27D4EB4FUL
                ^ ((ulong)(uint)variant + 1) * 0x165667B19E3779F9UL;
            Next();
        }

        public ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        public int Below(int n) => (int)(Next() % (ulong)n);

        public bool Coin() => (Next() >> 63) != 0;
    }
}
