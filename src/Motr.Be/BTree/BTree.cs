using System.Runtime.CompilerServices;
using System.Text;
using Motr.Be.Alloc;
using Motr.Be.Segments;
using Motr.Be.Tx;
using static Motr.Be.BTree.BTreeFormatConstants;

namespace Motr.Be.BTree;

/// <summary>
/// A b+tree in a segment (the B-tree HLD): variable-size or fixed-size keys and values, large keys and
/// values out of node, per-tree comparer, node checksums, cookies, cursors, credits for every operation.
/// Every node comes from the segment's allocator and every change is captured in the caller's
/// transaction. Use on the segment's owner locality; a <see cref="BTree"/> object is cheap to keep and
/// holds only scratch space and counters.
/// </summary>
/// <remarks>
/// Operations run synchronously inside one turn: open a transaction with the operation's credit
/// (<see cref="InsertCredit"/>, <see cref="DeleteCredit"/>, ...), call the operation, close. Spans
/// returned by lookups and cursors point into the segment and are valid until the tree next changes; they may be
/// passed straight back into a change of the tree (insert, update, delete), which copies them out before it moves
/// anything (docs/btree.md, "Spans into the segment passed back").
/// </remarks>
public sealed unsafe partial class BTree
{
    private readonly Segment _seg;
    private readonly long _hdr;
    private readonly IKeyComparer? _cmp;
    private readonly NodeFormat _leafFormat, _internalFormat;
    private readonly int _keySize, _valueSize;
    private readonly bool _recordCrc;
    private readonly int _inline;
    private readonly ulong _birth;
    private readonly byte _flags;
    private readonly uint _comparerId;
    private readonly TreeWatch _watch; // shared with every other object on this tree
    private readonly byte[] _scratch = new byte[MaxNodeSize];
    private readonly byte[] _scratch2 = new byte[MaxNodeSize];
    private byte[] _sepKey = new byte[256];

    // Nodes whose header this operation has captured (each once).
    private readonly long[] _touched = new long[4 * MaxHeight];
    private int _touchedCount;

    private BTree(Segment seg, long header, IKeyComparer? comparer)
    {
        _seg = seg;
        _hdr = header;
        ref TreeHeader h = ref Hdr;
        _cmp = comparer is null || comparer is BytewiseComparer ? null : comparer;
        _leafFormat = (NodeFormat)h.LeafFormat;
        _keySize = h.KeySize;
        _valueSize = h.ValueSize;
        _internalFormat = _keySize >= 0 ? NodeFormat.FixedKeyValue : NodeFormat.Variable;
        _recordCrc = (h.Flags & RecordChecksumFlag) != 0;
        _inline = (int)h.InlineLimit;
        _birth = h.Birth;
        _flags = h.Flags;
        _comparerId = h.ComparerId;
        _watch = seg.Watcher(header, _birth, static () => new TreeWatch());
        _memLow = (nuint)seg.Memory.Base;
        _memLength = (nuint)seg.Memory.Reserved;
    }

    /// <summary>Offset of the tree header: what to keep (e.g. with <see cref="Segment.SetRoot"/>) to open the tree again.</summary>
    public long Offset => _hdr;

    /// <summary>The segment holding the tree.</summary>
    public Segment Segment => _seg;

    /// <summary>Number of records.</summary>
    public long Count { get { using var read = ReadHeader(); return Hdr.Count; } }

    /// <summary>Levels: 1 while the root is a leaf.</summary>
    public int Height { get { using var read = ReadHeader(); return (int)Hdr.Height; } }

    /// <summary>Largest node size in the tree.</summary>
    internal int LargestNode => (int)Hdr.LargestNode;

    /// <summary>Nodes in the tree.</summary>
    public long NodeCount { get { using var read = ReadHeader(); return Hdr.Nodes; } }

    /// <summary>Format of the leaves.</summary>
    public NodeFormat LeafFormat => _leafFormat;

    /// <summary>Fixed key size, or null for variable keys.</summary>
    public int? KeySize => _keySize >= 0 ? _keySize : null;

    /// <summary>Fixed value size, or null for variable values.</summary>
    public int? ValueSize => _valueSize >= 0 ? _valueSize : null;

    internal ref TreeHeader Hdr => ref *(TreeHeader*)(_seg.Base + _hdr);

    internal string Where => $"b+tree 0x{_hdr:X} in segment {_seg.Id} ({_seg.FileName})";

    /// <summary>
    /// Every public operation starts here: the object must still name a live tree (not destroyed, through this
    /// object or another one, nor replaced by another tree made at the same place: its cached format would be
    /// applied to the other tree's nodes), the segment must be open, and the caller must be on the segment's
    /// owner thread (the tree's memory has no locks: the owner is the lock). The header's counters skip the last check.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Enter()
    {
        EnterToRead();
        if (_seg.Tx.Owner is { IsOwnerThread: false }) ThrowNotOwner();
    }

    /// <summary>
    /// <see cref="Enter"/> without the thread check, for the header's counters (<see cref="Count"/>, <see cref="Stats"/>):
    /// monitoring reads them from other threads, and they touch no node.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void EnterToRead()
    {
        if (!IsOurs(ref Hdr)) ThrowGone(); // Hdr: ObjectDisposedException once the engine is closed
    }

    /// <summary>Whether <paramref name="h"/> is still the header of the tree this object opened (not destroyed, not another tree made at its place).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool IsOurs(ref TreeHeader h) =>
        h.Magic == TreeMagic && h.Birth == _birth && h.KeySize == _keySize && h.ValueSize == _valueSize
        && h.LeafFormat == (byte)_leafFormat && h.Flags == _flags && h.InlineLimit == (uint)_inline && h.ComparerId == _comparerId;

    /// <summary>
    /// A read of the header's counters, from any thread: off the owner thread it holds the segment's memory
    /// mapped until disposed (an engine closing meanwhile waits for it, or the read throws ObjectDisposedException).
    /// </summary>
    private HeaderRead ReadHeader()
    {
        if (_seg.Tx.Owner is { IsOwnerThread: true })
        {
            EnterToRead();
            return default;
        }
        if (!_seg.EnterForeignRead()) throw new ObjectDisposedException(nameof(BTree), $"{Where}: its segment is closed (the engine was disposed)");
        try
        {
            EnterToRead();
        }
        catch
        {
            _seg.ExitForeignRead();
            throw;
        }
        return new HeaderRead(_seg);
    }

    private readonly ref struct HeaderRead(Segment? seg)
    {
        public void Dispose() => seg?.ExitForeignRead();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowGone()
    {
        // This object opened a valid header here once: anything else there now means the tree was destroyed (through
        // this object or another) and the place freed, perhaps reused; not damage, which Open and fsck report.
        ref TreeHeader h = ref Hdr;
        if (h.Magic != TreeMagic) throw new ObjectDisposedException(nameof(BTree), $"{Where} was destroyed; this object can no longer be used");
        throw new ObjectDisposedException(nameof(BTree), $"{Where} was destroyed and another tree made at its place; this object can no longer be used (open the new tree)");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotOwner() =>
        throw new InvalidOperationException($"{Where}: b+tree operations must run on the segment's owner thread (its locality)");

    // ---- create, open, destroy -------------------------------------------------------------------------

    /// <summary>Credit of <see cref="Create"/>.</summary>
    public static TxCredit CreateCredit => Allocator.AllocCredit * 2 + TxCredit.Region(TreeHeader.SizeOf) + TxCredit.Region(NodeHeader.SizeOf) + Transaction.ChecksumCredit * 2;

    /// <summary>Creates an empty tree in <paramref name="tx"/>'s segment; keep <see cref="Offset"/> to open it later.</summary>
    /// <exception cref="BeException">The segment has no room for the tree (nothing was changed).</exception>
    /// <exception cref="ArgumentException">The configuration is invalid, or its node sizes would make operations need more
    /// log than a transaction may reserve on this domain, or the transaction is of another segment (nothing was changed).</exception>
    /// <exception cref="TxUsageException">The transaction is not open, or has less than <see cref="CreateCredit"/> left (nothing was changed).</exception>
    public static BTree Create(Transaction tx, Segment segment, BTreeConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(segment);
        CheckTx(tx, segment, CreateCredit, "create", $"b+tree in segment {segment.Id} ({segment.FileName})");
        int leaf = config.NodeSize, inner = config.InternalNodeSize ?? config.NodeSize;
        CheckNodeSize(leaf, nameof(config.NodeSize));
        CheckNodeSize(inner, nameof(config.InternalNodeSize));
        if (config.ValueSize is not null && config.KeySize is null)
            throw new ArgumentException("a fixed ValueSize needs a fixed KeySize (there is no format for variable keys with fixed values)");
        if (config.KeySize is < 1 or > MaxKeyLength) throw new ArgumentException($"KeySize {config.KeySize} must be 1 to {MaxKeyLength}");
        if (config.ValueSize is < 0 or > MaxValueLength) throw new ArgumentException($"ValueSize {config.ValueSize} must be 0 to {MaxValueLength}");
        var format = config.LeafFormat;
        bool crc = config.RecordChecksums;
        if (FixedRecordsProblem(format, config.KeySize ?? -1, config.ValueSize ?? -1, crc, leaf, inner) is { } tooBig) throw new ArgumentException(tooBig);

        uint comparerId = ComparerId(config.Comparer); // the comparer's Name is the caller's code: before any change

        // The checks below need the tree; a refusal rolls back to here, so it changes nothing.
        var start = tx.Savepoint();
        if (segment.Allocator.TryAlloc(tx, TreeHeader.SizeOf, 64, out long hdr) != AllocStatus.Ok)
            throw NoRoomToCreate(segment, $"{TreeHeader.SizeOf}-byte header"); // TryAlloc changed nothing
        ref TreeHeader h = ref tx.Capture<TreeHeader>(hdr);
        h = new TreeHeader
        {
            Magic = TreeMagic,
            Version = TreeVersion,
            LeafFormat = (byte)format,
            Flags = crc ? RecordChecksumFlag : (byte)0,
            LeafSize = (uint)leaf,
            InternalSize = (uint)inner,
            KeySize = config.KeySize ?? -1,
            ValueSize = config.ValueSize ?? -1,
            Height = 1,
            ComparerId = comparerId,
            InlineLimit = (uint)MaxInline(Math.Min(leaf, inner)),
            LargestNode = (uint)Math.Max(leaf, inner),
            Birth = (ulong)Random.Shared.NextInt64(1, long.MaxValue),
        };
        tx.DeferChecksum(hdr, TreeHeader.SizeOf, TreeHeader.CrcOffset, TreeMagic);
        segment.MarkVerified(hdr);
        var tree = new BTree(segment, hdr, config.Comparer);
        if (tree.NodeSizeProblem(Math.Max(leaf, inner), inner) is { } tooMuchLog)
        {
            tx.RollbackTo(start);
            throw new ArgumentException($"b+tree in segment {segment.Id} ({segment.FileName}): node sizes {leaf}/{inner}: {tooMuchLog}");
        }
        tree.BeginOp();
        tree._treeTouched = true; // captured whole above
        try
        {
            h.Root = tree.NewNode(tx, 0, leaf);
        }
        catch (NoSpace)
        {
            tx.RollbackTo(start);
            throw NoRoomToCreate(segment, $"{leaf}-byte root node");
        }
        catch
        {
            UndoPartial(tx, start); // damage the allocator found: leave the transaction as it was
            throw;
        }
        return tree;
    }

    private static BeException NoRoomToCreate(Segment segment, string what)
    {
        var a = segment.Allocator;
        return new BeException($"segment {segment.Id} ({segment.FileName}): cannot create a b+tree: no room for its {what} " +
            $"({a.FreeBytes} bytes free, segment size {segment.Size} of at most {segment.MaxSize}{(a.GrowthAllowed ? "" : ", growth disallowed")})");
    }

    /// <summary>Opens the tree whose header is at <paramref name="offset"/>.</summary>
    /// <exception cref="BeCorruptionException">No intact tree header there.</exception>
    /// <exception cref="ArgumentException">The tree was made with another comparer.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (its locality); <see cref="ObjectDisposedException"/> once the segment is closed.</exception>
    public static BTree Open(Segment segment, long offset, IKeyComparer? comparer = null)
    {
        ArgumentNullException.ThrowIfNull(segment);
        segment.CheckOwner("b+tree open"); // the header is read and the segment's map of verified blocks updated
        string where = $"b+tree 0x{offset:X} in segment {segment.Id} ({segment.FileName})";
        ref TreeHeader h = ref segment.At<TreeHeader>(offset);
        if (h.Magic != TreeMagic) throw new BeCorruptionException(segment.FileName, offset, $"{where}: not a b+tree header (magic 0x{h.Magic:X8})");
        if (h.Version != TreeVersion) throw new BeCorruptionException(segment.FileName, offset, $"{where}: tree format version {h.Version} is not supported; this build reads version {TreeVersion}");
        if (!segment.VerifyOnce(offset, TreeHeader.SizeOf, TreeHeader.CrcOffset)) throw new BeCorruptionException(segment.FileName, offset, $"{where}: tree header checksum mismatch");
        if (h.ComparerId != ComparerId(comparer))
            throw new ArgumentException($"{where} was made with another key comparer than '{comparer?.Name ?? "bytewise"}'");
        return new BTree(segment, offset, comparer);
    }

    /// <summary>
    /// Whether the header at <paramref name="offset"/> is a tree header whose magic alone is wrong: its checksum holds
    /// once the tree magic is put back. For fsck, to tell a damaged (or, with a zero magic, destroyed) tree from
    /// another structure a root names.
    /// </summary>
    public static bool IsTreeHeaderButForMagic(Segment segment, long offset)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (offset < 0 || offset > segment.Size - TreeHeader.SizeOf) return false;
        Span<byte> copy = stackalloc byte[TreeHeader.SizeOf];
        segment.Bytes(offset, TreeHeader.SizeOf).CopyTo(copy);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(copy, TreeMagic);
        return BlockChecksum.Verify(copy, TreeHeader.CrcOffset);
    }

    /// <summary>Credit of <see cref="Destroy"/>.</summary>
    public static TxCredit DestroyCredit => Allocator.FreeCredit * 2 + TxCredit.Region(4) * 2;

    /// <summary>Frees an empty tree (its root and header). A tree with records is an error: delete them first (<see cref="DeleteAllAsync"/>).</summary>
    /// <exception cref="BeException">The tree is not empty.</exception>
    /// <exception cref="ArgumentException">The transaction is of another segment (nothing was changed).</exception>
    /// <exception cref="TxUsageException">The transaction is not open, or its remaining credit does not cover the operation (nothing was changed).</exception>
    public void Destroy(Transaction tx)
    {
        Enter();
        CheckTx(tx, DestroyCredit, "destroy");
        ref TreeHeader h = ref Hdr;
        if (h.Count != 0 || h.Height != 1)
            throw new BeException($"{Where}: cannot destroy a tree holding {h.Count} records; delete them first");
        long root = h.Root;
        var sp = tx.Savepoint();
        try
        {
            tx.Capture(root, 4);
            *(uint*)(_seg.Base + root) = 0;
            _seg.Allocator.Free(tx, root);
            BeginOp(); // cursors find the tree gone at their next move
            tx.Capture(_hdr, 4);
            h.Magic = 0;
            _seg.Allocator.Free(tx, _hdr);
        }
        catch
        {
            UndoPartial(tx, sp); // a chunk the allocator refused to free: the tree stays whole
            throw;
        }
        // No flag on the object: the cleared magic tells every later use, and an abort of this transaction puts it back.
    }

    private static void CheckNodeSize(int size, string what)
    {
        if (size < MinNodeSize || size > MaxNodeSize || (size & (size - 1)) != 0)
            throw new ArgumentException($"{what} {size} must be a power of two from {MinNodeSize} to {MaxNodeSize}");
    }

    private static uint ComparerId(IKeyComparer? c) =>
        c is null || c is BytewiseComparer ? 0u : Math.Max(1u, Crc32C.Compute(Encoding.UTF8.GetBytes(c.Name)));

    /// <summary>
    /// Fixed parts are always in node, so four fixed-size records must fit a node (<see cref="MaxInline"/>): what is
    /// wrong with these sizes for a tree of <paramref name="format"/> leaves, or null. Checked at create and when a
    /// dump's header is read.
    /// </summary>
    internal static string? FixedRecordsProblem(NodeFormat format, int keySize, int valueSize, bool crc, int leaf, int inner)
    {
        if (format == NodeFormat.Variable) return null;
        int leafRec = format == NodeFormat.FixedKeyValue ? Node.RecordSize(format, keySize, valueSize, crc) : Node.RecordSize(format, keySize, LargeRef.SizeOf, crc);
        int innerRec = Node.RecordSize(NodeFormat.FixedKeyValue, keySize, 8, crc);
        return leafRec > MaxInline(leaf) || innerRec > MaxInline(inner)
            ? $"fixed records of {leafRec} bytes (leaf) and {innerRec} bytes (internal) do not fit four to a node of {leaf}/{inner} bytes; use larger nodes or variable sizes"
            : null;
    }

    /// <summary>Largest record kept in a node of <paramref name="nodeSize"/> bytes: four must fit, with their index entries.</summary>
    internal static int MaxInline(int nodeSize) => ((nodeSize - NodeHeader.SizeOf) / 4 - NodeHeader.InternalEntrySize) & ~7;

    // ---- nodes -----------------------------------------------------------------------------------------

    /// <summary>
    /// The node at <paramref name="offset"/>, checked: magic, owner and version at every read; its place, size,
    /// checksum and structure at its first read in the session (<see cref="NodeProblem"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Node N(long offset)
    {
        var n = new Node(_seg.Base, offset);
        // The verified bit first: an offset outside the segment has none, and is refused before its header is read.
        if (!_seg.IsVerified(offset) || n.H.Magic != NodeMagic || n.H.Tree != _hdr || n.H.Version != NodeVersion) FirstRead(offset);
        return n;
    }

    /// <summary>Checks the node at <paramref name="offset"/> whole and marks it verified for the session; a damaged node throws, naming it.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FirstRead(long offset)
    {
        if (FirstReadProblem(offset) is { } what) throw new BeCorruptionException(_seg.FileName, offset, $"{Where}: node 0x{offset:X}: {what}");
    }

    /// <summary>What is wrong with the node at <paramref name="offset"/> (<see cref="NodeProblem"/>), or null, and then it is marked verified for the session.</summary>
    private string? FirstReadProblem(long offset)
    {
        var problem = NodeProblem(offset);
        if (problem is null) _seg.MarkVerified(offset);
        return problem;
    }

    /// <summary>Allocates and initialises an empty node; returns its offset.</summary>
    private long NewNode(Transaction tx, int level, int size)
    {
        var status = _seg.Allocator.TryAlloc(tx, size, 64, out long off);
        if (status != AllocStatus.Ok) throw new NoSpace();
        ref NodeHeader h = ref tx.Capture<NodeHeader>(off);
        h = new NodeHeader
        {
            Magic = NodeMagic,
            Version = NodeVersion,
            Format = (byte)(level == 0 ? _leafFormat : _internalFormat),
            Level = (byte)level,
            Flags = _recordCrc ? RecordChecksumFlag : (byte)0,
            Size = (uint)size,
            KeySize = (ushort)Math.Max(_keySize, 0),
            ValueSize = (ushort)(level == 0 ? Math.Max(_valueSize, 0) : 8),
            HeapTop = (uint)size,
            Tree = _hdr,
            Seq = 1,
        };
        tx.DeferPlacedChecksum(off, size, NodeHeader.CrcOffset, NodeMagic);
        _seg.MarkVerified(off);
        Remember(off);
        TouchTree(tx).Nodes++;
        return off;
    }

    /// <summary>Frees a node that holds nothing the tree still needs.</summary>
    private void FreeNode(Transaction tx, long off)
    {
        Touch(tx, off);
        tx.Capture(off, 4);
        *(uint*)(_seg.Base + off) = 0; // a node is never mistaken for one once freed
        _seg.Allocator.Free(tx, off);
        TouchTree(tx).Nodes--;
        if (!_freesTouched)
        {
            _freesTouched = true;
            tx.Capture(_hdr + TreeHeader.NodeFreesOffset, sizeof(ulong));
        }
        Hdr.NodeFrees++; // the cookies of this tree are refused from now on
    }

    /// <summary>Starts an operation: nothing touched yet.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void BeginOp()
    {
        Enter();
        _touchedCount = 0;
        _opSplits = _opShortened = 0;
        _treeTouched = false;
        _freesTouched = false;
        _watch.BeforeChange(); // cursors find their place again after any operation that may change the tree
    }

    private void Remember(long off) => _touched[_touchedCount++] = off;

    /// <summary>Captures a node's changing header fields once per operation, bumps its sequence and defers its checksum.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Node Touch(Transaction tx, long off)
    {
        for (int i = 0; i < _touchedCount; i++)
            if (_touched[i] == off) return new Node(_seg.Base, off);
        return TouchFirst(tx, off);
    }

    private Node TouchFirst(Transaction tx, long off)
    {
        Remember(off);
        var n = new Node(_seg.Base, off);
        tx.Capture(off + NodeHeader.MutableOffset, NodeHeader.MutableLength);
        n.H.Seq++;
        tx.DeferPlacedChecksum(off, n.Size, NodeHeader.CrcOffset, NodeMagic);
        return n;
    }

    private bool _treeTouched;
    private bool _freesTouched;

    /// <summary>Captures the tree header's changing fields once per operation.</summary>
    private ref TreeHeader TouchTree(Transaction tx)
    {
        if (!_treeTouched)
        {
            _treeTouched = true;
            tx.Capture(_hdr + TreeHeader.MutableOffset, TreeHeader.MutableLength);
            tx.DeferChecksum(_hdr, TreeHeader.SizeOf, TreeHeader.CrcOffset, TreeMagic);
        }
        return ref Hdr;
    }

    // ---- keys ------------------------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Compare(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => _cmp is null ? Bytewise(a, b) : _cmp.Compare(a, b);

    /// <summary>The key of record <paramref name="i"/> (out-of-node keys are read from their chunk).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ReadOnlySpan<byte> KeyAt(Node n, int i)
    {
        n.Parts(i, out byte* k, out uint klenf, out _, out _);
        if ((klenf & LargeFlag) == 0) return new ReadOnlySpan<byte>(k, (int)klenf);
        return _seg.Bytes(((LargeRef*)k)->Chunk, (int)(klenf & ~LargeFlag));
    }

    /// <summary>The value of leaf record <paramref name="i"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ReadOnlySpan<byte> ValueAt(Node n, int i)
    {
        n.Parts(i, out _, out _, out byte* v, out uint vlenf);
        if ((vlenf & LargeFlag) == 0) return new ReadOnlySpan<byte>(v, (int)vlenf);
        return _seg.Bytes(((LargeRef*)v)->Chunk, (int)(vlenf & ~LargeFlag));
    }

    private void CheckKey(ReadOnlySpan<byte> key)
    {
        if (key.Length == 0) throw new ArgumentException($"{Where}: empty key", nameof(key));
        if (_keySize >= 0 ? key.Length != _keySize : key.Length > MaxKeyLength)
            throw new ArgumentException(_keySize >= 0
                ? $"{Where}: key of {key.Length} bytes; this tree's keys are {_keySize} bytes"
                : $"{Where}: key of {key.Length} bytes is over the limit of {MaxKeyLength}", nameof(key));
    }

    /// <summary>A value's length, named as the public method's parameter (<c>value</c>, or <c>valueLength</c>).</summary>
    private void CheckValue(int length, string paramName = "value")
    {
        if (_valueSize >= 0 ? length != _valueSize : (uint)length > MaxValueLength)
            throw new ArgumentException(_valueSize >= 0
                ? $"{Where}: value of {length} bytes; this tree's values are {_valueSize} bytes"
                : length < 0 ? $"{Where}: value length {length} is negative"
                : $"{Where}: value of {length} bytes is over the limit of {MaxValueLength}", paramName);
    }

    /// <summary>
    /// Rolls an operation that threw part-way back to its savepoint, unless the transaction is no longer open (then
    /// there is nothing to keep: its captures are gone with it).
    /// </summary>
    private static void UndoPartial(Transaction tx, TxSavepoint sp)
    {
        if (tx.State == TxState.Open) tx.RollbackTo(sp);
    }

    /// <summary>An allocation failed half-way through an operation: the operation rolls back to its savepoint and returns <see cref="BTreeStatus.OutOfSpace"/>.</summary>
    private sealed class NoSpace : Exception;

    /// <inheritdoc />
    public override string ToString() => $"{Where}: {Count} records, height {Height}, {NodeCount} nodes, {_leafFormat} leaves";
}
