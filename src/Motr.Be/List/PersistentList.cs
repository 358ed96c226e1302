using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Motr.Be.Segments;
using Motr.Be.Tx;

namespace Motr.Be.List;

/// <summary>
/// A doubly linked list whose head (<see cref="ListHead"/>) and links (<see cref="ListLink"/>) live in a
/// segment (Motr's <c>m0_be_list</c>). The value binds a segment, the offset of the head and the offset
/// of the link inside every element; elements are named by their offsets (0 means none). Changes go
/// through a <see cref="Transaction"/> on the same segment opened with the matching credit
/// (<see cref="AddCredit"/>, <see cref="AddTailCredit"/>, <see cref="InsertCredit"/>,
/// <see cref="DelCredit"/>), and capture only the link and head fields they change.
/// </summary>
/// <remarks>
/// Use on the segment's owner thread: every member but the offsets the value binds refuses any other thread with
/// <see cref="InvalidOperationException"/> (<see cref="ObjectDisposedException"/> once the engine is closed). Once the list
/// is destroyed (<see cref="Destroy"/>, through this value or another) every member that reads it throws
/// <see cref="ObjectDisposedException"/>.
/// Every operation validates everything it will touch, and that the transaction's remaining credit covers its
/// captures, before its first capture, and captures everything before its first write, so an operation that throws
/// leaves the list and the transaction unchanged. Misuse (an element already on a list, one not on this list, an offset outside
/// the segment) throws <see cref="BeException"/>; a damaged head or neighbour link met on the way throws
/// <see cref="BeCorruptionException"/>; an enumerator moved after the list changed other than by deleting its
/// current element throws <see cref="InvalidOperationException"/>. Nothing here allocates except on those error
/// paths and in <see cref="Check"/>.
/// </remarks>
public readonly partial struct PersistentList
{
    private readonly Segment _seg;
    private readonly long _head;
    private readonly int _linkOffset;

    /// <summary>Binds a list created (<see cref="Create"/>) at <paramref name="headOffset"/> of <paramref name="segment"/>, whose elements embed their link at <paramref name="linkOffset"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="segment"/> is null.</exception>
    /// <exception cref="BeException">An offset is negative, outside the segment or misaligned.</exception>
    /// <exception cref="BeCorruptionException">No list head of a supported version is at <paramref name="headOffset"/>, or its checksum does not match.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public PersistentList(Segment segment, long headOffset, int linkOffset)
    {
        ArgumentNullException.ThrowIfNull(segment);
        CheckOwner(segment, headOffset, "bind"); // before the offset check, which reads the segment's size
        CheckHeadOffset(segment, headOffset, "bind");
        if (linkOffset < 0 || (linkOffset & (ListFormat.Alignment - 1)) != 0)
            throw new BeException($"list 0x{headOffset:X} in segment {segment.Id} ({segment.FileName}): link offset {linkOffset} must be a non-negative multiple of {ListFormat.Alignment}");
        _seg = segment;
        _head = headOffset;
        _linkOffset = linkOffset;
        _ = HeadRef("bind", binding: true);
    }

    /// <summary>The segment holding the list.</summary>
    public Segment Segment => _seg;

    /// <summary>Offset of the <see cref="ListHead"/> in the segment.</summary>
    public long HeadOffset => _head;

    /// <summary>Offset of the <see cref="ListLink"/> inside each element.</summary>
    public int LinkOffset => _linkOffset;

    // ---- credits ----------------------------------------------------------------------------------

    /// <summary>Credit of <see cref="Create"/>: the whole head and its checksum, 2 regions / 52 bytes.</summary>
    public static TxCredit CreateCredit => TxCredit.Region(ListHead.SizeOf) + Transaction.ChecksumCredit;

    /// <summary>Credit of <see cref="Destroy"/>: the head's magic (8) and the cancel of its pending checksum (4), 2 regions / 12 bytes.</summary>
    public static TxCredit DestroyCredit => TxCredit.Region(sizeof(ulong)) + Transaction.ChecksumCredit;

    /// <summary>
    /// Credit of <see cref="Add"/>: the new element's link (32), the old first element's prev (8) and
    /// the head's First+Count (16) — or, on an empty list, the link and First+Count+Last (24) — and the
    /// head's checksum (4): 4 regions / 60 bytes.
    /// </summary>
    public static TxCredit AddCredit => new TxCredit(3, ListLink.SizeOf + 3 * sizeof(long)) + Transaction.ChecksumCredit;

    /// <summary>Credit of <see cref="AddTail"/>: mirror image of <see cref="AddCredit"/>, 4 regions / 60 bytes.</summary>
    public static TxCredit AddTailCredit => new TxCredit(3, ListLink.SizeOf + 3 * sizeof(long)) + Transaction.ChecksumCredit;

    /// <summary>
    /// Credit of <see cref="AddAfter"/> or <see cref="AddBefore"/>: the new element's link (32), both
    /// neighbours' facing pointers (8 + 8) and the head's Count (8) — at an end, one neighbour pointer
    /// fewer and one head field more — and the head's checksum (4): 5 regions / 60 bytes.
    /// </summary>
    public static TxCredit InsertCredit => new TxCredit(4, ListLink.SizeOf + 3 * sizeof(long)) + Transaction.ChecksumCredit;

    /// <summary>
    /// Credit of <see cref="Del"/>: the element's link magic (8), both neighbours' facing pointers
    /// (8 + 8) and the head's Count (8) — at an end, one neighbour pointer fewer and one head field
    /// more — and the head's checksum (4): 5 regions / 36 bytes.
    /// </summary>
    public static TxCredit DelCredit => new TxCredit(4, 4 * sizeof(long)) + Transaction.ChecksumCredit;

    // ---- create / destroy -------------------------------------------------------------------------

    /// <summary>
    /// Writes an empty list head at <paramref name="headOffset"/> of <paramref name="segment"/> inside
    /// <paramref name="tx"/> (needs <see cref="CreateCredit"/>). The offset must be 8-byte aligned, outside
    /// page 0 and hold no list already.
    /// </summary>
    /// <exception cref="BeException">The offset is invalid, a list already exists there, or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> or <paramref name="segment"/> is null.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open, or its remaining credit does not cover the operation (nothing was captured).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public static void Create(Transaction tx, Segment segment, long headOffset)
    {
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(segment);
        CheckOwner(segment, headOffset, "create");
        CheckHeadOffset(segment, headOffset, "create");
        CheckTx(tx, segment, headOffset, "create");
        ref ListHead h = ref segment.At<ListHead>(headOffset);
        if (h.Magic == ListFormat.HeadMagic)
            throw new BeException($"list 0x{headOffset:X} in segment {segment.Id} ({segment.FileName}): create: a list head (count {h.Count}) already exists there; destroy it first");
        CheckCredit(tx, segment, headOffset, 1, ListHead.SizeOf, "create");
        tx.Capture(headOffset, ListHead.SizeOf);
        h.Magic = ListFormat.HeadMagic;
        h.Version = ListFormat.Version;
        h.Flags = 0;
        h.First = 0;
        h.Count = 0;
        h.Last = 0;
        h.Reserved = 0;
        tx.DeferChecksum(headOffset, ListHead.SizeOf, ListHead.CrcOffset, HeadMagic32);
        segment.MarkVerified(headOffset);
    }

    /// <summary>Removes the (empty) list: clears its head's magic inside <paramref name="tx"/> (needs <see cref="DestroyCredit"/>).</summary>
    /// <exception cref="BeException">The list is not empty, or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open, or its remaining credit does not cover the operation (nothing was captured).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void Destroy(Transaction tx)
    {
        ref ListHead h = ref HeadRef("destroy");
        CheckTx(tx, "destroy");
        if (h.Count != 0 || h.First != 0 || h.Last != 0)
            throw new BeException($"{Where}: destroy: the list is not empty (count {h.Count}, first 0x{h.First:X}, last 0x{h.Last:X})");
        CheckCredit(tx, _seg, _head, 1 + Transaction.ChecksumCredit.Regions, sizeof(ulong) + Transaction.ChecksumCredit.Bytes, "destroy", headChecksum: false);
        tx.Capture(_head, sizeof(ulong));
        h.Magic = 0;
        // A checksum of the head deferred earlier in this group is written at the seal if the place still starts with
        // "MOTR", the first 32 bits of every list magic: a link whose magic lands here once the caller reuses the place
        // would have the head's checksum written over the bytes after it.
        tx.CancelChecksum(_head);
    }

    // ---- queries ----------------------------------------------------------------------------------

    /// <summary>Offset of the first element, 0 when the list is empty.</summary>
    /// <remarks>Checks the element is a member with no previous one (and, for an empty list, that the head's last is 0 too),
    /// as <see cref="Next"/> checks the element it returns: a walk must not start at a damaged end without a sign.</remarks>
    /// <exception cref="BeCorruptionException">The head's first element is not the start of this list's chain.</exception>
    public long Head => End(first: true, "head");

    /// <summary>Offset of the last element, 0 when the list is empty.</summary>
    /// <remarks>Checks the element is a member with no next one, as <see cref="Head"/> does at the other end.</remarks>
    /// <exception cref="BeCorruptionException">The head's last element is not the end of this list's chain.</exception>
    public long Tail => End(first: false, "tail");

    private long End(bool first, string op)
    {
        ref ListHead h = ref HeadRef(op);
        long e = first ? h.First : h.Last;
        if (e == 0)
        {
            long other = first ? h.Last : h.First;
            if (other != 0) ThrowBrokenHead(op, first ? "last" : "first", 0, other);
            return 0;
        }
        ref ListLink k = ref _seg.At<ListLink>(Neighbour(e, op, 0));
        if ((first ? k.Prev : k.Next) != 0) ThrowBrokenChain(op, e, first ? "prev" : "next", 0);
        return e;
    }

    /// <summary>Number of elements.</summary>
    public long Count => HeadRef("count").Count;

    /// <summary>Whether the list has no elements.</summary>
    public bool IsEmpty => HeadRef("is-empty").First == 0;

    /// <summary>The element after <paramref name="elem"/>, 0 when it is the last.</summary>
    /// <remarks>Checks the element it returns links back to <paramref name="elem"/> (or, at the end, that the head's last is
    /// <paramref name="elem"/>), as an enumerator's move does: a damaged link must not lead a caller stepping with
    /// <see cref="Next"/> past elements, off the list or into another list without a sign.</remarks>
    /// <exception cref="BeException"><paramref name="elem"/> is not an element of this list.</exception>
    /// <exception cref="BeCorruptionException">The link between <paramref name="elem"/> and the element after it (or the head) is damaged.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public long Next(long elem) => Step(elem, forward: true, "next");

    /// <summary>The element before <paramref name="elem"/>, 0 when it is the first.</summary>
    /// <remarks>Checks the element it returns links forward to <paramref name="elem"/> (or, at the start, that the head's
    /// first is <paramref name="elem"/>), as <see cref="Next"/> does the other way.</remarks>
    /// <exception cref="BeException"><paramref name="elem"/> is not an element of this list.</exception>
    /// <exception cref="BeCorruptionException">The link between <paramref name="elem"/> and the element before it (or the head) is damaged.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public long Prev(long elem) => Step(elem, forward: false, "prev");

    private long Step(long elem, bool forward, string op)
    {
        ref ListHead h = ref HeadRef(op);
        ref ListLink k = ref Member(elem, op, "element");
        long to = forward ? k.Next : k.Prev;
        if (to == 0)
        {
            long end = forward ? h.Last : h.First;
            if (end != elem) ThrowBrokenChain(op, elem, forward ? "next" : "prev", end);
            return 0;
        }
        if (to == elem) ThrowLoop(op, elem, k.Prev, k.Next);
        ref ListLink t = ref _seg.At<ListLink>(Neighbour(to, op, elem));
        if ((forward ? t.Prev : t.Next) != elem) ThrowBrokenChain(op, to, forward ? "prev" : "next", elem);
        return to;
    }

    /// <summary>
    /// Whether <paramref name="elem"/> is an element of this list according to its own link (in range,
    /// linked magic, owner is this head): O(1), never throws for a bad offset. <see cref="Check"/>
    /// verifies the whole chain.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public bool Contains(long elem)
    {
        if (_seg is null) return false;
        CheckOwner(_seg, _head, "contains");
        if (!TryLinkOffset(elem, out long link)) return false;
        ref ListLink k = ref _seg.At<ListLink>(link);
        return k.Magic == ListFormat.LinkedMagic && k.Owner == _head;
    }

    // ---- changes ----------------------------------------------------------------------------------

    /// <summary>Inserts <paramref name="elem"/> at the head of the list inside <paramref name="tx"/> (needs <see cref="AddCredit"/>).</summary>
    /// <exception cref="BeException"><paramref name="elem"/> is already linked or outside the segment, or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open, or its remaining credit does not cover the operation (nothing was captured).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void Add(Transaction tx, long elem)
    {
        ref ListHead h = ref HeadRef("add");
        Insert(tx, ref h, 0, h.First, elem, "add");
    }

    /// <summary>Appends <paramref name="elem"/> at the tail of the list inside <paramref name="tx"/> (needs <see cref="AddTailCredit"/>).</summary>
    /// <exception cref="BeException"><paramref name="elem"/> is already linked or outside the segment, or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open, or its remaining credit does not cover the operation (nothing was captured).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void AddTail(Transaction tx, long elem)
    {
        ref ListHead h = ref HeadRef("add-tail");
        Insert(tx, ref h, h.Last, 0, elem, "add-tail");
    }

    /// <summary>Inserts <paramref name="elem"/> right after <paramref name="existing"/> inside <paramref name="tx"/> (needs <see cref="InsertCredit"/>).</summary>
    /// <exception cref="BeException"><paramref name="existing"/> is not on this list, <paramref name="elem"/> is already linked or outside the segment, or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open, or its remaining credit does not cover the operation (nothing was captured).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void AddAfter(Transaction tx, long existing, long elem)
    {
        ref ListHead h = ref HeadRef("add-after");
        long next = Member(existing, "add-after", "existing element").Next;
        Insert(tx, ref h, existing, next, elem, "add-after");
    }

    /// <summary>Inserts <paramref name="elem"/> right before <paramref name="existing"/> inside <paramref name="tx"/> (needs <see cref="InsertCredit"/>).</summary>
    /// <exception cref="BeException"><paramref name="existing"/> is not on this list, <paramref name="elem"/> is already linked or outside the segment, or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open, or its remaining credit does not cover the operation (nothing was captured).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void AddBefore(Transaction tx, long existing, long elem)
    {
        ref ListHead h = ref HeadRef("add-before");
        long prev = Member(existing, "add-before", "existing element").Prev;
        Insert(tx, ref h, prev, existing, elem, "add-before");
    }

    /// <summary>
    /// Removes <paramref name="elem"/> from the list inside <paramref name="tx"/> (needs
    /// <see cref="DelCredit"/>). Only the element's link magic changes in the element (to
    /// <see cref="ListFormat.UnlinkedMagic"/>); its next/prev keep their old values, which is what lets an
    /// enumerator go on after deleting its current element.
    /// </summary>
    /// <exception cref="BeException"><paramref name="elem"/> is not on this list, or <paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="tx"/> is null.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open, or its remaining credit does not cover the operation (nothing was captured).</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public void Del(Transaction tx, long elem)
    {
        ref ListHead h = ref HeadRef("del");
        CheckTx(tx, "del");
        ref ListLink ke = ref Member(elem, "del", "element");
        long p = ke.Prev, n = ke.Next;
        // A loop through the element itself, or the same element on both sides (a two-element cycle), passes the
        // facing-pointer checks below; unlinking through it would spread the damage instead of reporting it.
        if (p == elem || n == elem || (p == n && p != 0)) ThrowLoop("del", elem, p, n);
        long lp = 0, ln = 0;
        if (p != 0)
        {
            lp = Neighbour(p, "del", elem);
            if (_seg.At<ListLink>(lp).Next != elem) ThrowBrokenChain("del", p, "next", elem);
        }
        else if (h.First != elem) ThrowBrokenHead("del", "first", elem, h.First);
        if (n != 0)
        {
            ln = Neighbour(n, "del", elem);
            if (_seg.At<ListLink>(ln).Prev != elem) ThrowBrokenChain("del", n, "prev", elem);
        }
        else if (h.Last != elem) ThrowBrokenHead("del", "last", elem, h.Last);
        if (h.Count <= 0) ThrowBrokenCount("del", h.Count, emptyByLinks: false);
        CheckCredit(tx, _seg, _head, 2 + (p != 0 ? 1 : 0) + (n != 0 ? 1 : 0),
            sizeof(ulong) + (p != 0 ? sizeof(long) : 0) + (n != 0 ? sizeof(long) : 0) + HeadBytes(p == 0, n == 0), "del");

        // The credit covers every capture (checked above), so none below throws; all are made before the first write.
        tx.Capture(elem + _linkOffset + ListLink.MagicOffset, sizeof(ulong));
        if (p != 0) tx.Capture(lp + ListLink.NextOffset, sizeof(long));
        if (n != 0) tx.Capture(ln + ListLink.PrevOffset, sizeof(long));
        CaptureHead(tx, p == 0, n == 0);

        ke.Magic = ListFormat.UnlinkedMagic;
        if (p != 0) _seg.At<ListLink>(lp).Next = n; else h.First = n;
        if (n != 0) _seg.At<ListLink>(ln).Prev = p; else h.Last = p;
        h.Count--;
    }

    /// <summary>Links <paramref name="elem"/> between <paramref name="p"/> and <paramref name="n"/> (0: the head's end).</summary>
    private void Insert(Transaction tx, ref ListHead h, long p, long n, long elem, string op)
    {
        CheckTx(tx, op);
        long le = LinkOffsetOf(elem, op, "element");
        ref ListLink ke = ref _seg.At<ListLink>(le);
        if (ke.Magic == ListFormat.LinkedMagic) ThrowAlreadyLinked(op, elem, ke.Owner);
        if (le < _head + ListHead.SizeOf && _head < le + ListLink.SizeOf) ThrowOverlap(op, elem, "the list head", _head);
        // The same element on both sides: a self loop (existing's prev and next are itself), which passes the
        // facing-pointer checks below; inserting into it would spread the damage instead of reporting it.
        if (p == n && p != 0) ThrowLoop(op, p, p, n);
        long lp = 0, ln = 0;
        if (p != 0)
        {
            lp = Neighbour(p, op, elem);
            if (_seg.At<ListLink>(lp).Next != n) ThrowBrokenChain(op, p, "next", n);
            if (Math.Abs(lp - le) < ListLink.SizeOf) ThrowOverlap(op, elem, "the link of element", p);
        }
        else if (h.First != n) ThrowBrokenHead(op, "first", n, h.First);
        if (n != 0)
        {
            ln = Neighbour(n, op, elem);
            if (_seg.At<ListLink>(ln).Prev != p) ThrowBrokenChain(op, n, "prev", p);
            if (Math.Abs(ln - le) < ListLink.SizeOf) ThrowOverlap(op, elem, "the link of element", n);
        }
        else if (h.Last != p) ThrowBrokenHead(op, "last", p, h.Last);
        if ((p | n) == 0 ? h.Count != 0 : h.Count <= 0) ThrowBrokenCount(op, h.Count, emptyByLinks: (p | n) == 0);
        CheckCredit(tx, _seg, _head, 2 + (p != 0 ? 1 : 0) + (n != 0 ? 1 : 0),
            ListLink.SizeOf + (p != 0 ? sizeof(long) : 0) + (n != 0 ? sizeof(long) : 0) + HeadBytes(p == 0, n == 0), op);

        // The credit covers every capture (checked above), so none below throws; all are made before the first write.
        tx.Capture(le, ListLink.SizeOf);
        if (p != 0) tx.Capture(lp + ListLink.NextOffset, sizeof(long));
        if (n != 0) tx.Capture(ln + ListLink.PrevOffset, sizeof(long));
        CaptureHead(tx, p == 0, n == 0);

        ke.Next = n;
        ke.Prev = p;
        ke.Owner = _head;
        ke.Magic = ListFormat.LinkedMagic;
        if (p != 0) _seg.At<ListLink>(lp).Next = elem; else h.First = elem;
        if (n != 0) _seg.At<ListLink>(ln).Prev = elem; else h.Last = elem;
        h.Count++;
    }

    /// <summary>Captures the head fields a change makes: Count always, First and/or Last when an end moves (one region, since they are adjacent).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CaptureHead(Transaction tx, bool first, bool last)
    {
        tx.Capture(_head + (first ? ListHead.FirstOffset : ListHead.CountOffset), HeadBytes(first, last));
        tx.DeferChecksum(_head, ListHead.SizeOf, ListHead.CrcOffset, HeadMagic32);
    }

    /// <summary>Bytes of the head a change captures: Count, plus First and/or Last when that end moves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int HeadBytes(bool first, bool last) => sizeof(long) * (1 + (first ? 1 : 0) + (last ? 1 : 0));

    /// <summary>The head magic's first 32 bits: what the seal checks before it checksums a head (a destroyed one has 0).</summary>
    private const uint HeadMagic32 = unchecked((uint)ListFormat.HeadMagic);

    // ---- validation -------------------------------------------------------------------------------

    private string Where => $"list 0x{_head:X} in segment {_seg.Id} ({_seg.FileName})";

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref ListHead HeadRef(string op, bool binding = false)
    {
        if (_seg is null) ThrowUnbound(op);
        CheckOwner(_seg, _head, op);
        ref ListHead h = ref _seg.At<ListHead>(_head);
        if (h.Magic != ListFormat.HeadMagic || h.Version != ListFormat.Version) ThrowBadHead(op, h.Magic, h.Version, binding);
        if (!_seg.VerifyOnce(_head, ListHead.SizeOf, ListHead.CrcOffset)) ThrowHeadChecksum(op);
        return ref h;
    }

    /// <summary>
    /// Refuses any use of the list off the segment's owner thread, reads included (as the b+tree does): the segment's
    /// memory has no locks, the owner is the lock, and the first read of a head after open also updates the segment's
    /// map of verified blocks. A transaction checks the thread only at its first change, so an operation given one
    /// that already changed something would otherwise go ahead off the owner thread.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CheckOwner(Segment seg, long head, string op)
    {
        if (seg.Tx.Owner is { IsOwnerThread: false }) ThrowNotOwner(seg, head, op);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckOwnerIfBound(string op)
    {
        if (_seg is not null) CheckOwner(_seg, _head, op);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckTx(Transaction tx, string op) => CheckTx(tx, _seg, _head, op);

    /// <summary>The transaction must be an open one of the list's segment.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CheckTx(Transaction tx, Segment seg, long head, string op)
    {
        if (tx is null || tx.Segment != seg || tx.State != TxState.Open) ThrowWrongTx(seg, head, op, tx);
    }

    /// <summary>
    /// Refuses an operation whose captures (<paramref name="regions"/> regions, <paramref name="bytes"/> bytes, and the
    /// head's deferred checksum unless this transaction already has it) would not fit the transaction's remaining
    /// credit, before its first capture: a capture refused part-way would leave the earlier ones in the transaction,
    /// using credit (and log space) for a change that never happened.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CheckCredit(Transaction tx, Segment seg, long head, int regions, long bytes, string op, bool headChecksum = true)
    {
        if (headChecksum)
        {
            TxCredit cs = tx.DeferChecksumCredit(head, ListHead.SizeOf, ListHead.CrcOffset, HeadMagic32);
            regions += cs.Regions;
            bytes += cs.Bytes;
        }
        if (!tx.Fits(new TxCredit(regions, bytes))) ThrowCredit(seg, head, op, tx, regions, bytes);
    }

    /// <summary>Link offset of <paramref name="elem"/> if the whole link is inside the data area and aligned.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryLinkOffset(long elem, out long link)
    {
        long size = _seg.Size;
        link = elem + _linkOffset;
        return (ulong)(elem - 1) < (ulong)size
            && link >= ListFormat.MinOffset
            && link <= size - ListLink.SizeOf
            && (link & (ListFormat.Alignment - 1)) == 0;
    }

    /// <summary>Link offset of an element given by the caller; throws <see cref="BeException"/> if it cannot hold a link.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long LinkOffsetOf(long elem, string op, string role)
    {
        if (!TryLinkOffset(elem, out long link)) ThrowBadElement(op, role, elem);
        return link;
    }

    /// <summary>The link of an element the caller says is on this list; throws <see cref="BeException"/> if it is not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref ListLink Member(long elem, string op, string role)
    {
        ref ListLink k = ref _seg.At<ListLink>(LinkOffsetOf(elem, op, role));
        if (k.Magic != ListFormat.LinkedMagic || k.Owner != _head) ThrowNotMember(op, role, elem, k.Magic, k.Owner);
        return ref k;
    }

    /// <summary>Link offset of an element reached through a link or the head; throws <see cref="BeCorruptionException"/> if it is not a member.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long Neighbour(long elem, string op, long from)
    {
        if (!TryLinkOffset(elem, out long link)) ThrowBadNeighbour(op, elem, from, "its link is outside the segment's data area or misaligned");
        ref ListLink k = ref _seg.At<ListLink>(link);
        if (k.Magic != ListFormat.LinkedMagic) ThrowBadNeighbour(op, elem, from, $"link magic 0x{k.Magic:X16} is not the linked magic");
        if (k.Owner != _head) ThrowBadNeighbour(op, elem, from, $"its link says it is on list 0x{k.Owner:X}");
        return link;
    }

    private static void CheckHeadOffset(Segment seg, long headOffset, string op)
    {
        if (headOffset < ListFormat.MinOffset || headOffset > seg.Size - ListHead.SizeOf || (headOffset & (ListFormat.Alignment - 1)) != 0)
            throw new BeException($"list 0x{headOffset:X} in segment {seg.Id} ({seg.FileName}): {op}: a list head must be 8-byte aligned inside " +
                $"[0x{ListFormat.MinOffset:X}, 0x{seg.Size:X}) (the segment's data area)");
    }

    // ---- throw helpers (kept out of line so the hot paths stay small) ------------------------------

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowUnbound(string op) =>
        throw new InvalidOperationException($"{op}: this PersistentList is default (bound to no segment)");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNotOwner(Segment seg, long head, string op)
    {
        // Off the owner thread after the engine closed: the object was kept too long, which is what the caller must learn.
        if (!seg.IsOpen)
            throw new ObjectDisposedException(seg.FileName, $"list 0x{head:X} in segment {seg.Id} ({seg.FileName}): {op}: the segment is closed (its engine was disposed)");
        throw new InvalidOperationException($"list 0x{head:X} in segment {seg.Id} ({seg.FileName}): {op}: list operations, reads included, must run on the segment's owner thread (its locality)");
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowHeadChecksum(string op) =>
        throw new BeCorruptionException(_seg.FileName, _head, $"{Where}: {op}: list head checksum mismatch");

    private void ThrowBadHead(string op, ulong magic, uint version, bool binding)
    {
        // A value found a sound head when it was bound (its first read this session, checksum verified): a zero magic
        // now is what Destroy leaves, through this value or another. Using the list after that is the caller's mistake,
        // as with a destroyed b+tree, not damage to report. At bind a zero magic is just no list there.
        if (magic == 0 && !binding)
            throw new ObjectDisposedException(nameof(PersistentList), $"{Where}: {op}: the list was destroyed; this value can no longer be used (create a list again to reuse the place)");
        string what = magic != ListFormat.HeadMagic
            ? $"{op}: no list head here (magic 0x{magic:X16}, expected 0x{ListFormat.HeadMagic:X16})"
            : $"{op}: unsupported list version {version} (this build reads {ListFormat.Version})";
        throw new BeCorruptionException(_seg.FileName, _head, $"list 0x{_head:X} in segment {_seg.Id}: {what}");
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowWrongTx(Segment seg, long head, string op, Transaction? tx)
    {
        string where = $"list 0x{head:X} in segment {seg.Id} ({seg.FileName})";
        if (tx is null) throw new ArgumentNullException(nameof(tx), $"{where}: {op}: the transaction is null");
        if (tx.Segment != seg) throw new BeException($"{where}: {op}: the transaction is on segment {tx.Segment.Id}, not on the list's segment");
        throw new TxUsageException($"{where}: {op}: needs an open transaction; {tx.NotOpenReason}");
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowCredit(Segment seg, long head, string op, Transaction tx, int regions, long bytes)
    {
        TxCredit c = tx.Credit, u = tx.Used;
        throw new TxUsageException($"list 0x{head:X} in segment {seg.Id} ({seg.FileName}): {op}: needs {regions} regions / {bytes} bytes " +
            $"but the transaction has {c.Regions - u.Regions} regions / {c.Bytes - u.Bytes} bytes left: it exceeds its credit; nothing was captured");
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadElement(string op, string role, long elem) =>
        throw new BeException($"{Where}: {op}: {role} 0x{elem:X} cannot hold a link: its link [0x{elem + _linkOffset:X}, +{ListLink.SizeOf}) " +
            $"must be 8-byte aligned inside the data area [0x{ListFormat.MinOffset:X}, 0x{_seg.Size:X}) (offset 0 is null)");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotMember(string op, string role, long elem, ulong magic, long owner)
    {
        string why = magic == ListFormat.LinkedMagic ? $"it is linked in another list (head 0x{owner:X})"
            : magic == ListFormat.UnlinkedMagic ? "it was deleted from a list and is not linked"
            : $"it is not linked (link magic 0x{magic:X16})";
        throw new BeException($"{Where}: {op}: {role} 0x{elem:X} (link 0x{elem + _linkOffset:X}) is not on this list: {why}");
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowAlreadyLinked(string op, long elem, long owner) =>
        throw new BeException($"{Where}: {op}: element 0x{elem:X} (link 0x{elem + _linkOffset:X}) is already linked" +
            (owner == _head ? " in this list" : $" in list 0x{owner:X}") + "; delete it first");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowOverlap(string op, long elem, string what, long other) =>
        throw new BeException($"{Where}: {op}: the link of element 0x{elem:X} (0x{elem + _linkOffset:X}) overlaps {what} 0x{other:X}");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadNeighbour(string op, long elem, long from, string why) =>
        throw new BeCorruptionException(_seg.FileName, elem + _linkOffset,
            $"{Where}: {op}: element 0x{elem:X}, {(from == 0 ? "named by the head" : $"neighbour of 0x{from:X}")}, is not a valid member: {why}");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBrokenChain(string op, long elem, string field, long expected) =>
        throw new BeCorruptionException(_seg.FileName, elem + _linkOffset,
            $"{Where}: {op}: the {field} of element 0x{elem:X} is 0x{(field == "next" ? _seg.At<ListLink>(elem + _linkOffset).Next : _seg.At<ListLink>(elem + _linkOffset).Prev):X}, expected 0x{expected:X}");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowLoop(string op, long elem, long prev, long next) =>
        throw new BeCorruptionException(_seg.FileName, elem + _linkOffset,
            $"{Where}: {op}: element 0x{elem:X} has prev 0x{prev:X} and next 0x{next:X}: a damaged link makes a loop");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBrokenHead(string op, string field, long expected, long actual) =>
        throw new BeCorruptionException(_seg.FileName, _head,
            $"{Where}: {op}: the head's {field} is 0x{actual:X}, expected 0x{expected:X}");

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBrokenCount(string op, long count, bool emptyByLinks) =>
        throw new BeCorruptionException(_seg.FileName, _head + ListHead.CountOffset,
            $"{Where}: {op}: the head's count is {count} but its first/last say the list is {(emptyByLinks ? "empty" : "not empty")}");

    /// <inheritdoc />
    public override string ToString() => _seg is null ? "list (unbound)" : $"{Where}, link at +{_linkOffset}";
}
