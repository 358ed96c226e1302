using System.Runtime.CompilerServices;
using Motr.Be.Segments;

namespace Motr.Be.Tx;

/// <summary>A point inside an open transaction that <see cref="Transaction.RollbackTo"/> returns to.</summary>
public readonly struct TxSavepoint
{
    internal readonly Transaction Tx;
    internal readonly int Regions, Undo, Marks, UsedRegions;
    internal readonly long UsedBytes;
    /// <summary>The transaction's life it was taken in, and the stamps of its last region and mark then (0: none):
    /// it is still a point of the transaction only while those very entries are.</summary>
    internal readonly long Life, RegionStamp, MarkStamp;

    internal TxSavepoint(Transaction tx, int regions, int undo, int marks, int usedRegions, long usedBytes, long life, long regionStamp, long markStamp)
    {
        Tx = tx;
        Life = life;
        RegionStamp = regionStamp;
        MarkStamp = markStamp;
        Regions = regions;
        Undo = undo;
        Marks = marks;
        UsedRegions = usedRegions;
        UsedBytes = usedBytes;
    }
}

/// <summary>Where a transaction is in its life.</summary>
public enum TxState
{
    /// <summary>Open: may capture and change bytes.</summary>
    Open,
    /// <summary>Closed: its changes belong to a group; <see cref="Transaction.Persisted"/> tells when they are durable.</summary>
    Closed,
    /// <summary>Aborted: its captured bytes were restored.</summary>
    Aborted,
    /// <summary>Returned to its segment's pool by <see cref="Transaction.Dispose"/>; must not be used.</summary>
    Disposed,
}

/// <summary>
/// A small atomic change to one segment. Open it with a credit (<see cref="Segment.BeginAsync"/>),
/// call <see cref="Capture"/> before changing bytes, then <see cref="Close"/> (or <see cref="Abort"/>,
/// which restores the captured bytes). Between the first capture and close or abort there must be no
/// await: the engine aborts a transaction left open at the end of a turn (DESIGN invariant 1).
/// </summary>
/// <remarks>
/// Every change is captured with its old bytes, and <see cref="Abort"/> restores them all, so memory
/// outside the captured regions always equals the durable state. Deferred checksums rely on that: a
/// block's checksum is computed from memory at seal (<see cref="DeferChecksum"/>), or from the segment
/// file at placing (<see cref="DeferPlacedChecksum"/>), and must match what recovery rebuilds from disk.
/// Transaction objects are pooled per segment: <see cref="Dispose"/> returns one to the pool (aborting
/// it if still open), after which it must not be used. A closed transaction's
/// <see cref="Persisted"/> stays valid until then.
/// </remarks>
public sealed unsafe class Transaction : IDisposable
{
    internal struct Region
    {
        public long Offset;
        public int Length;
        public int UndoPos;
        /// <summary>Unique over the transaction object's lives (see <see cref="TxSavepoint"/>).</summary>
        public long Stamp;
    }

    /// <summary>When a deferred checksum is computed.</summary>
    internal enum MarkKind : byte
    {
        /// <summary>At seal, in memory; the checksum travels in the group as a captured region.</summary>
        Seal = 0,
        /// <summary>At placing, in the segment file; the group carries a <see cref="Log.ChecksumDesc"/>.</summary>
        Placed = 1,
        /// <summary>The block was freed: forget any checksum pending for it.</summary>
        Cancel = 2,
    }

    internal struct ChecksumMark
    {
        public long Block;
        public int Length;
        public int CrcOffset;
        public uint Magic;
        public MarkKind Kind;
        /// <summary>Unique over the transaction object's lives (see <see cref="TxSavepoint"/>); not part of <see cref="SameAs"/>.</summary>
        public long Stamp;

        /// <summary>The same mark: same block, size, checksum place, magic and kind.</summary>
        public readonly bool SameAs(in ChecksumMark o) =>
            Block == o.Block && Length == o.Length && CrcOffset == o.CrcOffset && Magic == o.Magic && Kind == o.Kind;
    }

    internal readonly TxManager M;
    internal TxState _state = TxState.Disposed;
    private TxCredit _credit;
    private int _usedRegions;
    private long _usedBytes;
    internal long _reservation;
    internal long _captureTurn = -1;
    internal Region[] _regions = new Region[4];
    internal int _regionCount;
    private byte[] _undo = new byte[256];
    private int _undoLen;
    internal byte[] _payload = Array.Empty<byte>();
    internal int _payloadLen = -1;
    internal ChecksumMark[] _marks = new ChecksumMark[2];
    internal int _markCount;
    internal long _id;
    internal long _groupSeq;
    internal bool _force;
    internal bool _abortedAtTurnEnd;
    internal int _openSlot = -1;
    // Savepoint validity: every region and mark appended gets the next stamp, and every life (Reset) starts at a new one,
    // never reused by this (pooled) object, so a savepoint names exactly the entries it was taken after.
    private long _stamp, _life;

    internal Transaction(TxManager m) => M = m;

    /// <summary>The segment the transaction changes.</summary>
    public Segment Segment => M.Segment;

    /// <summary>Where the transaction is in its life.</summary>
    public TxState State => _state;

    /// <summary>Id assigned at close (per segment, consecutive over closed transactions); 0 before.</summary>
    public long Id => _id;

    /// <summary>The credit the transaction was opened with.</summary>
    public TxCredit Credit => _credit;

    /// <summary>How much of the credit has been used.</summary>
    public TxCredit Used => new(_usedRegions, _usedBytes);

    /// <summary>Whether what is left of the credit covers <paramref name="need"/>: the check every structure makes before
    /// its first capture, so that an operation is refused whole rather than cut off part-way.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool Fits(TxCredit need) => _credit.Regions - _usedRegions >= need.Regions && _credit.Bytes - _usedBytes >= need.Bytes;

    /// <summary>Credit of one <see cref="DeferChecksum"/>, <see cref="DeferPlacedChecksum"/> or <see cref="CancelChecksum"/> call.</summary>
    public static TxCredit ChecksumCredit => new(1, 4);

    internal void Reset(TxCredit credit, long reservation)
    {
        _state = TxState.Open;
        _life = ++_stamp;
        _credit = credit;
        _usedRegions = 0;
        _usedBytes = 0;
        _reservation = reservation;
        _captureTurn = -1;
        _regionCount = 0;
        _undoLen = 0;
        _payloadLen = -1;
        _markCount = 0;
        _id = 0;
        _groupSeq = 0;
        _force = false;
        _abortedAtTurnEnd = false;
    }

    /// <summary>
    /// Records that [offset, offset + length) is about to change: keeps its current bytes for
    /// <see cref="Abort"/> and logs its bytes as they are at close. Returns the bytes to change.
    /// </summary>
    /// <exception cref="TxUsageException">The transaction is not open, the range is outside the segment or starts in its
    /// header (below <see cref="SegmentHeader.UserStart"/>, the heap's start: the static part, the geometry block, the
    /// allocator's state and the roots block are the engine's), or the capture exceeds the credit. Nothing is captured.</exception>
    /// <exception cref="InvalidOperationException">The transaction's first change is made off its segment's owner thread.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<byte> Capture(long offset, int length)
    {
        Check(offset, length);
        return Record(offset, length);
    }

    /// <summary>Keeps the range's bytes for undo and lists it for the log; the range and the credit are checked.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Span<byte> Record(long offset, int length)
    {
        if (_captureTurn < 0) M.MarkDirty(this); // the first change: checks the thread before anything is recorded
        if (_regionCount == _regions.Length) Array.Resize(ref _regions, _regions.Length * 2);
        if (_undoLen + length > _undo.Length) Array.Resize(ref _undo, Math.Max(_undo.Length * 2, _undoLen + length));
        byte* p = M.Segment.Base + offset;
        new ReadOnlySpan<byte>(p, length).CopyTo(_undo.AsSpan(_undoLen));
        ref Region r = ref _regions[_regionCount++];
        r.Offset = offset;
        r.Length = length;
        r.UndoPos = _undoLen;
        r.Stamp = ++_stamp;
        _undoLen += length;
        _usedRegions++;
        _usedBytes += length;
        return new Span<byte>(p, length);
    }

    /// <summary>Captures the <typeparamref name="T"/> at <paramref name="offset"/> and returns a reference to it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref T Capture<T>(long offset) where T : unmanaged
    {
        Capture(offset, sizeof(T));
        return ref *(T*)(M.Segment.Base + offset);
    }

    /// <summary>
    /// The engine's own capture in the segment header's dynamic part [<see cref="SegmentHeader.StaticLength"/>,
    /// <see cref="SegmentHeader.UserStart"/>), which <see cref="Capture"/> refuses to users: the geometry block
    /// (<see cref="Segment.Grow"/> changing Size), the allocator's state and the roots block, each changed together with
    /// its checksum (<see cref="DeferHeaderChecksum"/>; the geometry block's is rewritten at every seal).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Span<byte> CaptureHeader(long offset, int length)
    {
        CheckHeader(offset, length);
        return Record(offset, length);
    }

    /// <summary>Captures the <typeparamref name="T"/> at <paramref name="offset"/> of the header (see <see cref="CaptureHeader(long, int)"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ref T CaptureHeader<T>(long offset) where T : unmanaged
    {
        CaptureHeader(offset, sizeof(T));
        return ref *(T*)(M.Segment.Base + offset);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Check(long offset, int length)
    {
        if (_state != TxState.Open) ThrowState("capture in");
        long size = M.Segment.Size;
        if (offset < SegmentHeader.UserStart || length <= 0 || offset > size - length) ThrowOutside(offset, length, size);
        if (_usedRegions >= _credit.Regions || _usedBytes + length > _credit.Bytes) ThrowCredit($"capture of {length} bytes at 0x{offset:X}", 1, length);
    }

    /// <summary>Throws as <see cref="CaptureHeader(long, int)"/> would (state, place, credit), capturing nothing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CheckHeader(long offset, int length)
    {
        if (_state != TxState.Open) ThrowState("capture in");
        if (offset < SegmentHeader.StaticLength || length <= 0 || offset > SegmentHeader.UserStart - length) ThrowNotHeader(offset, length);
        if (_usedRegions >= _credit.Regions || _usedBytes + length > _credit.Bytes) ThrowCredit($"capture of {length} bytes at 0x{offset:X}", 1, length);
    }

    /// <summary>
    /// Attaches <paramref name="payload"/> (opaque bytes for the caller's own redo) to the transaction;
    /// it is logged with the transaction and handed back by recovery. Counts against the credit's bytes.
    /// </summary>
    public void SetPayload(ReadOnlySpan<byte> payload)
    {
        if (_state != TxState.Open) ThrowState("set the payload of");
        long old = Math.Max(_payloadLen, 0);
        if (_usedBytes - old + payload.Length > _credit.Bytes) ThrowCredit($"payload of {payload.Length} bytes", 0, payload.Length);
        if (_captureTurn < 0) M.MarkDirty(this); // checks the thread before anything is recorded
        if (_payload.Length < payload.Length) _payload = new byte[Math.Max(payload.Length, 64)];
        payload.CopyTo(_payload);
        _usedBytes += payload.Length - old;
        _payloadLen = payload.Length;
    }

    /// <summary>
    /// Asks that the CRC32C of the block [blockOffset, blockOffset + blockLength) be recomputed into its
    /// 4-byte field at <paramref name="crcOffset"/> (relative to the block, excluded from the sum) when
    /// the group is sealed, once for all transactions of the group that changed it. If
    /// <paramref name="magic"/> is not 0 the block is checksummed only if it still starts with that
    /// 32-bit value at seal time, so a block freed meanwhile (magic cleared) is left alone.
    /// Needs <see cref="ChecksumCredit"/>. Suits small blocks; see <see cref="DeferPlacedChecksum"/> for large ones.
    /// </summary>
    /// <exception cref="TxUsageException">The transaction is not open, the block is outside the segment or starts in its
    /// header (below <see cref="SegmentHeader.UserStart"/>: the header's blocks are checksummed by the engine alone), its CRC
    /// field is not inside it, it overlaps another block (at another place) whose checksum is pending in this transaction or in
    /// the open group and has not been cancelled since (<see cref="CancelChecksum"/>) — the message names both blocks — or the
    /// credit is short. Nothing is deferred. The exact same block again is free, as is any mark repeating the latest for its place.</exception>
    public void DeferChecksum(long blockOffset, int blockLength, int crcOffset, uint magic = 0) =>
        AddMark(blockOffset, blockLength, crcOffset, magic, MarkKind.Seal, header: false);

    /// <summary>
    /// The engine's own <see cref="DeferChecksum"/> of a block of the header (the allocator's state, the roots block),
    /// which users may not checksum: its CRC field is the one the segment's open checks.
    /// </summary>
    internal void DeferHeaderChecksum(long blockOffset, int blockLength, int crcOffset) =>
        AddMark(blockOffset, blockLength, crcOffset, 0, MarkKind.Seal, header: true);

    /// <summary>
    /// Like <see cref="DeferChecksum"/>, but the checksum is computed when the block is placed into the
    /// segment file — once per checkpoint (and again by recovery), however many groups changed the block —
    /// instead of from memory at every seal. The group carries only a 16-byte descriptor. For large blocks
    /// changed often (b+tree nodes): reading a whole node at every seal costs more than the change itself.
    /// The copy in memory keeps the checksum it was loaded with, so it is stale once the block changes:
    /// <see cref="Segment.ChecksumStale"/> tells which blocks fsck cannot verify in memory. The block must
    /// start with <paramref name="magic"/> (not 0) when placed, or it is left alone.
    /// Needs <see cref="ChecksumCredit"/>.
    /// </summary>
    /// <exception cref="TxUsageException">As for <see cref="DeferChecksum"/>: the transaction is not open, the block is bad or
    /// overlaps another pending one, or the credit is short. Nothing is deferred.</exception>
    /// <exception cref="ArgumentException"><paramref name="magic"/> is 0.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="crcOffset"/> lies beyond what the log's descriptor holds.</exception>
    public void DeferPlacedChecksum(long blockOffset, int blockLength, int crcOffset, uint magic)
    {
        if (magic == 0) throw new ArgumentException("a placed checksum needs the block's magic", nameof(magic));
        if (crcOffset > Log.PackedChecksumDesc.MaxCrcOffset)
            throw new ArgumentOutOfRangeException(nameof(crcOffset), crcOffset, $"a placed checksum's field must lie within the first {Log.PackedChecksumDesc.MaxCrcOffset + 1} bytes of its block (the log's descriptor holds no more)");
        AddMark(blockOffset, blockLength, crcOffset, magic, MarkKind.Placed, header: false);
        M.Segment.MarkChecksumStale(blockOffset);
    }

    /// <summary>
    /// The block at <paramref name="blockOffset"/> is being freed: no checksum deferred for it (in this
    /// transaction, its group or, for placed checksums, any group not yet checkpointed) may be written any
    /// more, as the place may soon hold other data. The allocator calls this on every free.
    /// Needs <see cref="ChecksumCredit"/> unless this transaction already deferred a checksum of the block.
    /// </summary>
    /// <exception cref="TxUsageException">The transaction is not open, the block is outside the segment or in its header
    /// (below <see cref="SegmentHeader.UserStart"/>: a cancel there would drop the engine's own checksum of the allocator's
    /// state or the roots block), or the credit is short. Nothing is recorded.</exception>
    public void CancelChecksum(long blockOffset) => AddMark(blockOffset, 0, 0, 0, MarkKind.Cancel, header: false);

    private void AddMark(long blockOffset, int blockLength, int crcOffset, uint magic, MarkKind kind, bool header)
    {
        if (_state != TxState.Open) ThrowState(kind == MarkKind.Cancel ? "cancel a checksum in" : "defer a checksum in");
        long size = M.Segment.Size;
        if (header)
        {
            if (blockOffset < SegmentHeader.StaticLength || blockLength < 4 || blockOffset > SegmentHeader.UserStart - blockLength || (uint)crcOffset > (uint)(blockLength - 4))
                throw new InvalidOperationException($"tx on segment {M.Segment.Id}: the engine's header checksum of [0x{blockOffset:X}, +{blockLength}) " +
                    $"with its CRC at +{crcOffset} is not inside the header's dynamic part [0x{SegmentHeader.StaticLength:X}, 0x{SegmentHeader.UserStart:X})");
        }
        else if (kind == MarkKind.Cancel)
        {
            if (blockOffset < SegmentHeader.UserStart || blockOffset >= size) ThrowOutside(blockOffset, 1, size, "cancel of the checksum of the block at", "recorded");
        }
        else if (blockOffset < SegmentHeader.UserStart || blockLength < 4 || blockOffset > size - blockLength || (uint)crcOffset > (uint)(blockLength - 4))
            ThrowBadBlock(blockOffset, blockLength, crcOffset, size);
        var mark = new ChecksumMark { Block = blockOffset, Length = blockLength, CrcOffset = crcOffset, Magic = magic, Kind = kind };
        if (Repeats(mark)) return;
        if (kind != MarkKind.Cancel && !header) CheckOverlap(blockOffset, blockLength);
        mark.Stamp = _stamp + 1; // taken only once the credit check passed
        if (_usedRegions >= _credit.Regions || _usedBytes + 4 > _credit.Bytes)
            ThrowCredit(kind == MarkKind.Cancel ? $"checksum cancel of block 0x{blockOffset:X}" : $"deferred checksum of block 0x{blockOffset:X}", 1, 4);
        if (_markCount == _marks.Length) Array.Resize(ref _marks, _marks.Length * 2);
        _marks[_markCount++] = mark;
        _stamp++;
        _usedRegions++;
        _usedBytes += 4;
    }

    /// <summary>
    /// Whether <paramref name="mark"/> repeats the latest mark of its block in this transaction, which makes it free.
    /// A different mark for the same place (freed, perhaps reallocated with another size) is added, never written
    /// over an older one, so RollbackTo can drop exactly the marks made after its savepoint; the seal sorts them and
    /// the latest wins.
    /// </summary>
    private bool Repeats(in ChecksumMark mark)
    {
        for (int i = _markCount - 1; i >= 0; i--)
        {
            ref var o = ref _marks[i];
            if (o.Block != mark.Block) continue;
            return o.SameAs(mark);
        }
        return false;
    }

    /// <summary>
    /// Refuses a block [<paramref name="block"/>, +<paramref name="length"/>) that overlaps another block whose checksum is
    /// pending — deferred and not cancelled since — in this transaction or in its segment's open group: the seal writes
    /// each block's CRC into its field after summing it, so one of the two would have the other's CRC written into its
    /// bytes after its own was computed, and fail its checksum when next read. A block at the same place is not another
    /// block (the latest mark for a place wins). Runs only for a mark that is not a repeat: the cost of a scan of the
    /// transaction's marks (which <see cref="Repeats"/> makes anyway for a new block) and a look-up of the pages the block
    /// touches in the group's index (<see cref="TxManager.PendingOverlap"/>); no allocation.
    /// </summary>
    private void CheckOverlap(long block, int length)
    {
        long end = block + length;
        for (int i = _markCount - 1; i >= 0; i--)
        {
            ref var o = ref _marks[i];
            if (o.Block == block || o.Kind == MarkKind.Cancel || o.Block >= end || block >= o.Block + o.Length) continue;
            if (LaterMark(o.Block, i)) continue; // superseded by a later mark for its place (a cancel, another size)
            ThrowOverlap(block, length, o.Block, o.Length, "in this transaction");
        }
        // (A block this transaction marked again — cancelled, resized — is judged by its mark here, above.)
        if (M.PendingOverlap(this, block, length, out long other, out int otherLength))
            ThrowOverlap(block, length, other, otherLength, "in the open group (by a transaction closed earlier)");
    }

    private bool LaterMark(long block, int after)
    {
        for (int j = after + 1; j < _markCount; j++)
            if (_marks[j].Block == block) return true;
        return false;
    }

    /// <summary>Whether the transaction holds any mark for the place <paramref name="block"/>.</summary>
    internal bool HasMark(long block) => LaterMark(block, -1);

    private void ThrowOverlap(long block, int length, long other, int otherLength, string where) =>
        throw new TxUsageException($"tx on segment {M.Segment.Id}: checksummed block [0x{block:X}, +{length}) overlaps block " +
            $"[0x{other:X}, +{otherLength}) whose checksum is already deferred {where}: the seal would write one block's CRC into " +
            "the other's bytes. Cancel the other block's checksum first (CancelChecksum, as Allocator.Free does) if its place " +
            "is being reused; nothing was deferred");

    /// <summary>
    /// Credit a <see cref="DeferChecksum"/> call with these arguments would use now: none when it repeats one this
    /// transaction already made, else <see cref="ChecksumCredit"/>. Lets an operation check its whole credit before
    /// its first capture.
    /// </summary>
    internal TxCredit DeferChecksumCredit(long blockOffset, int blockLength, int crcOffset, uint magic) =>
        Repeats(new ChecksumMark { Block = blockOffset, Length = blockLength, CrcOffset = crcOffset, Magic = magic, Kind = MarkKind.Seal })
            ? default : ChecksumCredit;

    /// <summary>A point inside the transaction to roll back to (see <see cref="RollbackTo"/>).</summary>
    /// <exception cref="TxUsageException">The transaction is not open.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public TxSavepoint Savepoint()
    {
        if (_state != TxState.Open) ThrowState("take a savepoint in");
        M.CheckOwner("take a savepoint in"); // it reads the transaction's lists, which only the owner changes
        return new TxSavepoint(this, _regionCount, _undoLen, _markCount, _usedRegions, _usedBytes - Math.Max(_payloadLen, 0), _life,
            _regionCount > 0 ? _regions[_regionCount - 1].Stamp : 0, _markCount > 0 ? _marks[_markCount - 1].Stamp : 0);
    }

    /// <summary>
    /// Undoes every capture made since <paramref name="savepoint"/> (restoring those bytes, newest first)
    /// and forgets them: the transaction goes on as it was then (its payload, if set, stays). Lets an
    /// operation that finds half-way that it cannot finish (no space) leave no trace and report a status.
    /// </summary>
    /// <exception cref="TxUsageException">The transaction is not open, or <paramref name="savepoint"/> is not one of its
    /// points any more (another transaction's, an earlier use of this pooled object's, or rolled back past); nothing is undone.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void RollbackTo(TxSavepoint savepoint)
    {
        if (_state != TxState.Open) ThrowState("roll back");
        if (!Holds(savepoint))
            throw new TxUsageException($"tx on segment {M.Segment.Id}: the savepoint is not of this transaction (another one, or an " +
                "earlier use of this pooled object), or was rolled back past (by a rollback to an earlier savepoint); nothing was undone");
        // Always, not only when memory is restored: dropping marks changes the transaction's lists and counters, which
        // the owner may be using in the same moment.
        M.CheckOwner("roll back");
        if (_regionCount > savepoint.Regions) M.Segment.BeforeRestore();
        byte* b = M.Segment.Base;
        for (int i = _regionCount - 1; i >= savepoint.Regions; i--)
        {
            ref Region r = ref _regions[i];
            _undo.AsSpan(r.UndoPos, r.Length).CopyTo(new Span<byte>(b + r.Offset, r.Length));
        }
        _regionCount = savepoint.Regions;
        _undoLen = savepoint.Undo;
        _markCount = savepoint.Marks;
        _usedRegions = savepoint.UsedRegions;
        _usedBytes = savepoint.UsedBytes + Math.Max(_payloadLen, 0); // the payload is not part of savepoints: it stays
        // Rolled back to nothing: the transaction holds no change again, so it may wait across turns like one that
        // never captured (an operation that answered OutOfSpace must not make the caller's next await a violation).
        // (Checksum marks do not count: they change no memory, and a transaction holding only marks may wait anyway.)
        if (_regionCount == 0 && _payloadLen < 0 && _captureTurn >= 0) M.MarkClean(this);
    }

    /// <summary>
    /// Whether <paramref name="sp"/> is still a point of this transaction: taken in this life, and the last region and
    /// mark it came after are still there (stamps are never reused, so the same stamp is the same entry, and the entries
    /// before it are the same too, as they are only ever appended or cut off). Counts alone would accept a savepoint rolled
    /// back past once the transaction captured as much again, and restore a state that never was.
    /// </summary>
    private bool Holds(in TxSavepoint sp) =>
        sp.Tx == this && sp.Life == _life
        && sp.Regions <= _regionCount && (sp.Regions == 0 || _regions[sp.Regions - 1].Stamp == sp.RegionStamp)
        && sp.Marks <= _markCount && (sp.Marks == 0 || _marks[sp.Marks - 1].Stamp == sp.MarkStamp);

    /// <summary>Asks that the group holding this transaction be written as soon as possible.</summary>
    public void Force()
    {
        if (_state == TxState.Closed) M.ForceGroup(_groupSeq);
        else _force = true;
    }

    /// <summary>
    /// Closes the transaction: its changes join the segment's open group. Returns an awaitable that
    /// completes when the group is durable (the same as <see cref="Persisted"/>).
    /// </summary>
    /// <exception cref="TxUsageException">The transaction is not open.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public TxPersistence Close()
    {
        if (_state != TxState.Open) ThrowState("close");
        M.CheckOwner("close");
        return M.CloseTx(this);
    }

    /// <summary>Completes when the closed transaction is durable in the log.</summary>
    /// <exception cref="TxUsageException">The transaction is not closed.</exception>
    public TxPersistence Persisted
    {
        get
        {
            if (_state != TxState.Closed) ThrowState("await the persistence of");
            return new TxPersistence(M, _groupSeq);
        }
    }

    /// <summary>Restores every captured region to its bytes before the transaction and ends it.</summary>
    /// <exception cref="TxUsageException">The transaction is not open.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void Abort()
    {
        if (_state != TxState.Open) ThrowState("abort");
        M.CheckOwner("abort");
        Rollback();
        M.EndTx(this, aborted: true);
    }

    internal void Rollback()
    {
        if (_regionCount > 0) M.Segment.BeforeRestore(); // cursors keep their keys before their nodes change back
        byte* b = M.Segment.Base;
        for (int i = _regionCount - 1; i >= 0; i--)
        {
            ref Region r = ref _regions[i];
            _undo.AsSpan(r.UndoPos, r.Length).CopyTo(new Span<byte>(b + r.Offset, r.Length));
        }
        _state = TxState.Aborted;
    }

    internal ReadOnlySpan<byte> Payload => _payloadLen < 0 ? default : _payload.AsSpan(0, _payloadLen);

    /// <summary>Aborts the transaction if still open and returns it to its segment's pool.</summary>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void Dispose()
    {
        if (_state == TxState.Disposed) return;
        M.CheckOwner("dispose"); // the pool is the owner's: a return from another thread would corrupt it
        if (_state == TxState.Open) Abort();
        _state = TxState.Disposed;
        M.Return(this);
    }

    private void ThrowState(string what)
    {
        if (_abortedAtTurnEnd) throw new TxUsageException($"cannot {what} tx on segment {M.Segment.Id}: {AbortedAtTurnEndWhy}");
        throw new TxUsageException($"cannot {what} tx on segment {M.Segment.Id}: it is {_state}");
    }

    private const string AbortedAtTurnEndWhy = "it captured changes and was still open when its turn ended (an await between open and close), " +
        "so the engine aborted it to keep transactions atomic (DESIGN invariant 1)";

    /// <summary>For the errors of the structures that refuse a transaction that is not open: its state, and why when the
    /// engine aborted it at a turn's end.</summary>
    internal string NotOpenReason => _abortedAtTurnEnd ? $"it is {_state}: {AbortedAtTurnEndWhy}" : $"it is {_state}";

    /// <summary>Names what is wrong with a checksummed block: its length, its CRC field's place, or its range.</summary>
    private void ThrowBadBlock(long block, int length, int crcOffset, long size)
    {
        if (length < 4)
            throw new TxUsageException($"tx on segment {M.Segment.Id}: checksummed block 0x{block:X}: length {length} cannot hold its 4-byte CRC field; nothing was deferred");
        if (block < SegmentHeader.UserStart || block > size - length) ThrowOutside(block, length, size, "checksummed block", "deferred");
        throw new TxUsageException($"tx on segment {M.Segment.Id}: checksummed block 0x{block:X} of {length} bytes: crcOffset {crcOffset} " +
            $"does not leave its 4-byte CRC field inside the block (0 to {length - 4}); nothing was deferred");
    }

    /// <summary>An engine bug: a header capture that is not inside the header's dynamic part.</summary>
    private void ThrowNotHeader(long offset, int length) =>
        throw new InvalidOperationException($"tx on segment {M.Segment.Id}: the engine's header capture [0x{offset:X}, +{length}) " +
            $"is not inside the header's dynamic part [0x{SegmentHeader.StaticLength:X}, 0x{SegmentHeader.UserStart:X})");

    private void ThrowOutside(long offset, long length, long size, string what = "capture at", string done = "captured")
    {
        if (length <= 0)
            throw new TxUsageException($"tx on segment {M.Segment.Id}: capture at 0x{offset:X} of length {length}: a region is at least one byte; nothing was captured");
        if (offset < SegmentHeader.UserStart)
            throw new TxUsageException($"tx on segment {M.Segment.Id}: {what} 0x{offset:X} (+{length}): 0x{offset:X} is in the segment header, in " +
                $"{SegmentHeader.BlockAt(offset)}, which only the engine changes and checksums (users start at the heap, 0x{SegmentHeader.UserStart:X}); nothing was {done}");
        throw new TxUsageException($"tx on segment {M.Segment.Id}: range [0x{offset:X}, +{length}) is outside the capturable space " +
            $"[0x{SegmentHeader.UserStart:X}, 0x{size:X}) of the segment; nothing was {done}");
    }

    private void ThrowCredit(string what, int regions, long bytes) =>
        throw new TxUsageException($"tx on segment {M.Segment.Id}: {what} exceeds its credit: would use {_usedRegions + regions} of {_credit.Regions} regions, " +
            $"{_usedBytes + bytes} of {_credit.Bytes} bytes");
}
