using Motr.Be.Segments;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

/// <summary>What <see cref="BTree.Check"/> found: problems (damage), and the tree's shape.</summary>
public sealed class BTreeCheckReport
{
    /// <summary>Damage found, each naming the node or chunk offset. Empty: the tree is intact.</summary>
    public List<string> Problems { get; } = new();

    /// <summary>Nodes whose fill is below a quarter of their size (allowed after deletes, when a sibling was too full to merge with).</summary>
    public int Underfull { get; internal set; }

    /// <summary>Records found.</summary>
    public long Records { get; internal set; }

    /// <summary>Nodes found.</summary>
    public long Nodes { get; internal set; }

    /// <summary>
    /// Nodes changed since open, whose checksum is computed when they are placed in the segment file: in
    /// memory it is stale, so fsck verifies it only after a reopen (which checks every node it reads).
    /// </summary>
    public long ChecksumsInFile { get; internal set; }

    /// <summary>Levels found.</summary>
    public int Height { get; internal set; }

    /// <summary>Average fill of the nodes (used bytes / size).</summary>
    public double AverageFill { get; internal set; }

    /// <summary>Lowest fill of a non-root node.</summary>
    public double MinimumFill { get; internal set; } = 1;

    /// <summary>Every allocator chunk the tree owns: header, nodes, out-of-node keys and values.</summary>
    public List<long> Chunks { get; } = new();

    /// <summary>Whether no damage was found.</summary>
    public bool Healthy => Problems.Count == 0;

    /// <inheritdoc />
    public override string ToString() =>
        (Healthy ? "healthy" : $"{Problems.Count} problems, first: {Problems[0]}") +
        $"; {Records} records, {Nodes} nodes, height {Height}, fill avg {AverageFill:P0} min {MinimumFill:P0}, {Underfull} underfull";
}

public sealed unsafe partial class BTree
{
    /// <summary>
    /// fsck of the tree: every node's header, checksum, hole list and records; key order within nodes
    /// and against the separators above; levels; that an internal node's record 0 holds no key; record and
    /// out-of-node checksums; and the header's counters against what was found.
    /// Reads only (it seals the segment's open group first, if no transaction is mid-way, so that
    /// deferred checksums are current). Returns a report; use on the tree's locality.
    /// </summary>
    /// <param name="cancellationToken">Stops the check between nodes (every <see cref="CheckProgress.Interval"/>) with
    /// <see cref="OperationCanceledException"/>; a check changes nothing, so nothing is left half done.</param>
    /// <param name="progress">Told the nodes checked, on this thread, every <see cref="CheckProgress.Interval"/> nodes
    /// and at the end, against the node count the tree's header records.</param>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public BTreeCheckReport Check(CancellationToken cancellationToken = default, IProgress<CheckProgress>? progress = null)
    {
        Enter();
        cancellationToken.ThrowIfCancellationRequested();
        _seg.Tx.SealForCheck();
        var rep = new BTreeCheckReport();
        ref TreeHeader h = ref Hdr;
        rep.Chunks.Add(_hdr);
        if (!BlockChecksum.Verify(_seg.Bytes(_hdr, TreeHeader.SizeOf), TreeHeader.CrcOffset) && _seg.Tx.ChecksumsCurrent)
            rep.Problems.Add($"tree header 0x{_hdr:X}: checksum mismatch");
        long large = 0, largeBytes = 0;
        double fillSum = 0;
        var seen = new HashSet<long>();
        var stack = new Stack<(long Node, int Level, byte[]? Low, byte[]? High)>();
        stack.Push((h.Root, (int)h.Height - 1, null, null));
        bool isRoot = true;
        string stage = $"b+tree 0x{_hdr:X}";
        long steps = 0;
        while (stack.Count > 0)
        {
            if (++steps % CheckProgress.Interval == 0)
            {
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Report(new CheckProgress(stage, rep.Nodes, (long)h.Nodes, "nodes"));
            }
            var (off, level, low, high) = stack.Pop();
            string at = $"node 0x{off:X}";
            if (!seen.Add(off)) { rep.Problems.Add($"{at}: reached twice (a cycle or a shared child)"); continue; }
            if (HeaderProblem(off) is { } badHeader) { rep.Problems.Add($"{at}: {badHeader}"); continue; }
            var n = new Node(_seg.Base, off);
            ref NodeHeader nh = ref n.H;
            rep.Chunks.Add(off);
            rep.Nodes++;
            // A node changed this session has its checksum computed when placed (DeferPlacedChecksum):
            // the one in memory is stale, and the file's copy was verified when the node was first read.
            if (_seg.ChecksumStale(off)) rep.ChecksumsInFile++;
            else if (!BlockChecksum.Verify(_seg.Bytes(off, n.Size), NodeHeader.CrcOffset))
                rep.Problems.Add($"{at}: node checksum mismatch");
            if (nh.Level != level) rep.Problems.Add($"{at}: level {nh.Level}, expected {level}");
            var want = level == 0 ? _leafFormat : _internalFormat;
            if (nh.Format != (byte)want) { rep.Problems.Add($"{at}: format {nh.Format}, expected {want}"); continue; }
            if (StructureProblem(n) is { } bad) { rep.Problems.Add($"{at}: {bad}"); continue; }
            int count = n.Count;
            if (count == 0 && !(isRoot && level == 0)) rep.Problems.Add($"{at}: empty non-root node");
            if (level > 0 && count < 1) continue;
            double fill = (double)n.UsedBytes / n.Size;
            fillSum += fill;
            if (!isRoot)
            {
                rep.MinimumFill = Math.Min(rep.MinimumFill, fill);
                if (n.UsedBytes * UnderfullDivisor < n.Size) rep.Underfull++;
            }
            bool prefixOk = CheckPrefix(n, at, rep);
            // Keys in order, within the bounds set by the separators above.
            ReadOnlySpan<byte> prev = default;
            for (int i = 0; i < count; i++)
            {
                ReadOnlySpan<byte> k;
                try { k = KeyAt(n, i); }
                catch (ArgumentOutOfRangeException) { rep.Problems.Add($"{at}: record {i}: out-of-node key outside the segment"); continue; }
                bool compared = level == 0 || i > 0;
                if (compared)
                {
                    if (i > (level == 0 ? 0 : 1) && Compare(prev, k) >= 0) rep.Problems.Add($"{at}: record {i} is not above record {i - 1}");
                    if (low != null && Compare(k, low) < 0) rep.Problems.Add($"{at}: record {i} is below its separator");
                    if (high != null && Compare(k, high) >= 0) rep.Problems.Add($"{at}: record {i} is not below the next separator");
                    prev = k;
                }
                else if (n.Format == NodeFormat.Variable ? k.Length != 0 : k.ContainsAnyExcept((byte)0))
                    rep.Problems.Add($"{at}: record 0 holds a key (an internal node's record 0 stands for everything below record 1: empty, or zeros for fixed-size keys)");
                if (prefixOk) CheckTag(n, i, k, compared, at, rep);
                if (_recordCrc)
                {
                    try { CheckRecord(n, i); }
                    catch (BeCorruptionException e) { rep.Problems.Add(e.Message); }
                }
                n.Parts(i, out byte* kp, out uint klenf, out byte* vp, out uint vlenf);
                if ((klenf & LargeFlag) != 0) { large++; largeBytes += klenf & ~LargeFlag; CheckLargeRef(kp, (int)(klenf & ~LargeFlag), at, i, rep); }
                if ((vlenf & LargeFlag) != 0) { large++; largeBytes += vlenf & ~LargeFlag; CheckLargeRef(vp, (int)(vlenf & ~LargeFlag), at, i, rep); }
            }
            if (level == 0) rep.Records += count;
            else
                for (int i = count - 1; i >= 0; i--)
                {
                    byte[]? lo = i == 0 ? low : KeyAt(n, i).ToArray();
                    byte[]? hi = i == count - 1 ? high : KeyAt(n, i + 1).ToArray();
                    stack.Push((n.Child(i), level - 1, lo, hi));
                }
            isRoot = false;
        }
        progress?.Report(new CheckProgress(stage, rep.Nodes, (long)h.Nodes, "nodes"));
        rep.Height = (int)h.Height;
        rep.AverageFill = rep.Nodes == 0 ? 0 : fillSum / rep.Nodes;
        if (rep.Records != h.Count) rep.Problems.Add($"tree header says {h.Count} records, found {rep.Records}");
        if (rep.Nodes != h.Nodes) rep.Problems.Add($"tree header says {h.Nodes} nodes, found {rep.Nodes}");
        if (large != h.LargeChunks || largeBytes != h.LargeBytes)
            rep.Problems.Add($"tree header says {h.LargeChunks} out-of-node chunks of {h.LargeBytes} bytes, found {large} of {largeBytes}");
        for (int i = 0; i < rep.Problems.Count; i++) rep.Problems[i] = $"{Where}: {rep.Problems[i]}";
        return rep;
    }

    /// <summary>The node's key prefix: within its limit, zeros after it; none at all under a custom comparer.</summary>
    private bool CheckPrefix(Node n, string at, BTreeCheckReport rep)
    {
        int bits = n.PrefixBits;
        if (bits > (Tagged ? MaxPrefixBits : 0))
        {
            rep.Problems.Add($"{at}: key prefix of {bits} bits (at most {(Tagged ? MaxPrefixBits : 0)})");
            return false;
        }
        for (int b = 0; b < NodeHeader.PrefixLength; b++)
        {
            int keep = b < bits >> 3 ? 0xFF : b == bits >> 3 ? (0xFF00 >> (bits & 7)) & 0xFF : 0;
            if ((n.Prefix[b] & ~keep) != 0)
            {
                rep.Problems.Add($"{at}: key prefix byte {b} has bits past the prefix's {bits}");
                return false;
            }
        }
        return true;
    }

    /// <summary>Record <paramref name="i"/>'s key begins with the node's prefix and its index entry holds its tag (0 where keys are not compared or not tagged).</summary>
    private void CheckTag(Node n, int i, ReadOnlySpan<byte> k, bool compared, string at, BTreeCheckReport rep)
    {
        int bits = n.PrefixBits;
        if (Tagged && compared && bits != 0 && ComparePrefix(k, n.Prefix, bits) != 0)
        {
            rep.Problems.Add($"{at}: record {i}: key does not begin with the node's {bits}-bit key prefix");
            return;
        }
        ushort want = Tagged && compared ? TagOf(k, bits) : (ushort)0;
        if (n.Tag(i) != want) rep.Problems.Add($"{at}: record {i}: index tag 0x{n.Tag(i):X4}, the key's is 0x{want:X4}");
    }

    private void CheckLargeRef(byte* p, int length, string at, int i, BTreeCheckReport rep)
    {
        long chunk = ((LargeRef*)p)->Chunk;
        long usable = -1;
        string why = "";
        if ((ulong)chunk < (ulong)_seg.Size)
        {
            // The allocator refuses an offset that is no block's with an exception; fsck reports it and goes on.
            try { usable = _seg.Allocator.UsableSize(chunk); }
            catch (BeException e) { why = $" ({e.Message})"; }
        }
        else why = $" (past the segment's {_seg.Size} bytes)";
        if (usable < length)
        {
            rep.Problems.Add($"{at}: record {i}: out-of-node part 0x{chunk:X} of {length} bytes is not an allocated chunk that large{why}");
            return;
        }
        rep.Chunks.Add(chunk);
        if (((LargeRef*)p)->Crc != Crc32C.Compute(_seg.Bytes(chunk, length)))
            rep.Problems.Add($"{at}: record {i}: out-of-node part 0x{chunk:X}: checksum mismatch");
    }

    /// <summary>Lengths of record <paramref name="i"/> within limits and the record within its node (wide arithmetic: a damaged length may be near 2^31).</summary>
    private string? RecordShapeProblem(Node n, int i, int off)
    {
        var f = n.Format;
        byte* r = n.P + off;
        long end = off + Node.LengthFields(f);
        if (end > n.Size) return "length fields run past the node";
        uint klenf = f == NodeFormat.Variable ? *(uint*)r : n.H.KeySize;
        uint vlenf = f == NodeFormat.Variable ? *(uint*)(r + 4) : f == NodeFormat.FixedKey ? *(uint*)r : n.H.ValueSize;
        long klen = klenf & ~LargeFlag, vlen = vlenf & ~LargeFlag;
        if (klen > MaxKeyLength) return $"key length {klen} is over the limit";
        if (vlen > (n.IsLeaf ? MaxValueLength : 8)) return $"value length {vlen} is over the limit";
        if (!n.IsLeaf && vlen != 8) return $"child field of {vlen} bytes";
        end += ((klenf & LargeFlag) != 0 ? LargeRef.SizeOf : klen) + ((vlenf & LargeFlag) != 0 ? LargeRef.SizeOf : vlen) + (n.RecordCrc ? 4 : 0);
        if (end > n.Size) return $"record of {end - off} bytes runs past the node";
        return null;
    }

    /// <summary>
    /// What is wrong with the node at <paramref name="offset"/>, or null: its place in the segment, magic, owner,
    /// version, size, checksum, and the structure every later read relies on without checking again
    /// (<see cref="StructureProblem"/>). Run on a node's first read in a session, so that a node whose damage its
    /// checksum does not show (a crafted file, a writer's bug) is refused by name instead of read out of bounds.
    /// </summary>
    private string? NodeProblem(long offset)
    {
        if (HeaderProblem(offset) is { } header) return header;
        var n = new Node(_seg.Base, offset);
        // A node changed this session has its checksum computed when placed: the one in memory is stale.
        if (!_seg.ChecksumStale(offset) && !BlockChecksum.Verify(_seg.Bytes(offset, n.Size), NodeHeader.CrcOffset)) return "node checksum mismatch";
        return StructureProblem(n);
    }

    /// <summary>The node at <paramref name="offset"/>'s place in the segment, magic, owner, version and size: the first thing wrong, or null (first read and fsck).</summary>
    private string? HeaderProblem(long offset)
    {
        if ((ulong)offset > (ulong)(_seg.Size - NodeHeader.SizeOf) || (offset & 63) != 0) return "not a valid node offset";
        ref NodeHeader h = ref new Node(_seg.Base, offset).H;
        if (h.Magic != NodeMagic) return $"not a b+tree node (magic 0x{h.Magic:X8})";
        if (h.Tree != _hdr) return $"node of another tree (0x{h.Tree:X})";
        if (h.Version != NodeVersion) return $"node format version {h.Version} is not supported";
        if (h.Size < MinNodeSize || h.Size > MaxNodeSize || (h.Size & (h.Size - 1)) != 0 || h.Size > (ulong)(_seg.Size - offset)) return $"bad size {h.Size}";
        return null;
    }

    /// <summary>
    /// The first thing wrong with the structure of node <paramref name="n"/> (its size already checked), or null:
    /// level, format and record geometry as the tree's header says; index, records and holes within the node and
    /// not overlapping; each child of an internal node a node offset inside the segment, the same in index and record.
    /// </summary>
    private string? StructureProblem(Node n)
    {
        ref NodeHeader h = ref n.H;
        if (h.Level >= MaxHeight) return $"level {h.Level}";
        var want = h.Level == 0 ? _leafFormat : _internalFormat;
        if (h.Format != (byte)want) return $"format {h.Format}, expected {want}";
        int keySize = Math.Max(_keySize, 0), valueSize = h.Level == 0 ? Math.Max(_valueSize, 0) : 8;
        if (h.KeySize != keySize || h.ValueSize != valueSize) return $"record geometry {h.KeySize}/{h.ValueSize}, the tree's {keySize}/{valueSize}";
        if (n.RecordCrc != _recordCrc) return $"flags 0x{h.Flags:X2}: record checksums {(n.RecordCrc ? "on" : "off")}, the tree's {(_recordCrc ? "on" : "off")}";
        if (SpaceProblem(n) is { } space) return space;
        if (h.Level > 0)
            for (int i = 0; i < n.Count; i++)
            {
                long child = n.Child(i);
                if (child != n.RecordChild(i)) return $"record {i}: index child 0x{child:X}, the record's 0x{n.RecordChild(i):X}";
                if ((ulong)child > (ulong)(_seg.Size - NodeHeader.SizeOf) || (child & 63) != 0) return $"record {i}: child 0x{child:X} is not a valid node offset";
            }
        return null;
    }

    /// <summary>Index, heap and holes of node <paramref name="n"/>: within bounds, not overlapping, adding up; the first thing wrong, or null.</summary>
    private string? SpaceProblem(Node n)
    {
        ref NodeHeader h = ref n.H;
        int size = n.Size, count = n.Count;
        if (h.HeapTop > size || h.HeapTop < n.IndexEnd) return $"heap top {h.HeapTop} outside [index end {n.IndexEnd}, {size}]";
        Span<byte> used = stackalloc byte[size >> 3];
        for (int i = 0; i < count; i++)
        {
            int off = n.RecOffset(i);
            if (off < h.HeapTop || off >= size) return $"record {i} at {off} outside the heap";
            if (RecordShapeProblem(n, i, off) is { } bad) return $"record {i}: {bad}";
            if (Claim(used, h.HeapTop, size, off, n.RecordSizeAt(i), $"record {i}") is { } overlap) return overlap;
        }
        long holeBytes = 0;
        int steps = 0;
        for (int hole = h.FirstHole; hole != 0; steps++)
        {
            if (steps > size / 8) return "hole list has a cycle";
            int off = hole << 3;
            if (off < h.HeapTop || off + 4 > size) return $"hole at {off} outside the heap";
            int len = ((ushort*)(n.P + off))[1] << 3;
            if (Claim(used, h.HeapTop, size, off, len, "hole") is { } overlap) return overlap;
            holeBytes += len;
            hole = *(ushort*)(n.P + off);
        }
        return holeBytes != h.HoleBytes ? $"holes add up to {holeBytes}, header says {h.HoleBytes}" : null;
    }

    /// <summary>Marks the 8-byte units of [<paramref name="off"/>, +<paramref name="len"/>) used; what is wrong if they lie outside the heap or were marked before.</summary>
    private static string? Claim(Span<byte> used, uint heapTop, int size, int off, int len, string what)
    {
        if (off < heapTop || off + len > size || (off & 7) != 0) return $"{what} [{off}, +{len}) outside the heap";
        for (int u = off >> 3; u < (off + len + 7) >> 3; u++)
        {
            if (used[u] != 0) return $"{what} at {off} overlaps another record or hole";
            used[u] = 1;
        }
        return null;
    }
}
