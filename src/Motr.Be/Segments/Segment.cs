using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Motr.Be.Storage;
using Motr.Be.Tx;

namespace Motr.Be.Segments;

/// <summary>
/// A persistent address space: a file loaded into an aligned native memory image, with structures
/// stored as-is at offsets. Page 0 is the <see cref="SegmentHeader"/>. All access happens on the
/// segment's owner thread (see <see cref="ISegmentOwner"/>); every change goes through a
/// <see cref="Transaction"/> opened on this segment.
/// </summary>
/// <remarks>
/// Offsets, not pointers, are what structures store. Spans and refs returned here stay valid across
/// <see cref="Grow"/> (the address space is reserved up front) but never outlive the segment.
/// </remarks>
public sealed unsafe partial class Segment : IDisposable
{
    private readonly SegmentMemory _mem;
    internal readonly TxManager Tx;

    internal Segment(ulong id, string fileName, SegmentMemory memory, Domain domain)
    {
        Id = id;
        FileName = fileName;
        _mem = memory;
        Domain = domain;
        Tx = new TxManager(this, domain);
    }

    /// <summary>The segment's id within its domain.</summary>
    public ulong Id { get; }

    /// <summary>Name of the backing file in the domain's storage.</summary>
    public string FileName { get; }

    /// <summary>The domain the segment belongs to.</summary>
    public Domain Domain { get; }

    /// <summary>The header at offset 0 (read it; change its dynamic fields only inside a transaction).</summary>
    public ref SegmentHeader Header => ref *(SegmentHeader*)Base;

    /// <summary>Current size of the address space in bytes.</summary>
    public long Size => ((SegmentHeader*)Base)->Size;

    /// <summary>The size the segment may grow to.</summary>
    public long MaxSize => ((SegmentHeader*)Base)->MaxSize;

    /// <summary>Id of the last transaction closed on this segment (0: none since creation).</summary>
    public long LastTxId => Tx.LastTxId;

    /// <summary>The start of the segment's memory. A closed segment's memory is unmapped: any use of it after the
    /// engine closed (a tree, list or allocator object kept too long) throws here instead of faulting the process.</summary>
    internal byte* Base
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            byte* b = _mem.Base;
            if (b == null) ThrowClosed();
            return b;
        }
    }

    /// <summary>Whether the segment's memory is still mapped (false once its engine closed).</summary>
    public bool IsOpen
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _mem.Base != null;
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowClosed() =>
        throw new ObjectDisposedException(FileName, $"segment {Id} ({FileName}) is closed: its engine was disposed, so its trees, lists and allocator can no longer be used");

    internal SegmentMemory Memory => _mem;

    /// <summary>The bytes [offset, offset + length) of the segment.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the segment.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<byte> Bytes(long offset, int length)
    {
        if ((ulong)offset > (ulong)Size || (ulong)length > (ulong)(Size - offset)) ThrowRange(offset, length);
        return new Span<byte>(Base + offset, length);
    }

    /// <summary>A reference to the <typeparamref name="T"/> stored at <paramref name="offset"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not inside the segment.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref T At<T>(long offset) where T : unmanaged
    {
        if ((ulong)offset > (ulong)Size || (ulong)sizeof(T) > (ulong)(Size - offset)) ThrowRange(offset, sizeof(T));
        return ref *(T*)(Base + offset);
    }

    /// <summary>
    /// Grows the address space to at least <paramref name="newSize"/> (rounded up to a page) inside
    /// <paramref name="tx"/>, which needs <see cref="GrowCredit"/>. Returns false, changing nothing, when
    /// that would pass <see cref="MaxSize"/>, or when the process cannot get the memory (the pages cannot be made
    /// accessible: a warning through <see cref="DomainOptions.OnWarning"/> gives the errno; callers see it as out of
    /// space, as they would at the limit, and the segment goes on serving). New space reads as zero.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="newSize"/> is negative.</exception>
    /// <exception cref="BeException"><paramref name="tx"/> is on another segment.</exception>
    /// <exception cref="TxUsageException"><paramref name="tx"/> is not open or lacks <see cref="GrowCredit"/>; nothing changed.</exception>
    /// <exception cref="InvalidOperationException">Called off the segment's owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public bool Grow(Transaction tx, long newSize)
    {
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentOutOfRangeException.ThrowIfNegative(newSize);
        // The size field is the one of tx's segment: another segment's would be set to memory it never committed.
        if (tx.Segment != this)
            throw new BeException($"segment {Id} ({FileName}): grow: the transaction is on segment {tx.Segment.Id}, not on this segment");
        CheckOwner("grow");
        // Compared before rounding up: a size near long.MaxValue would round to a negative one, "already reached".
        if (newSize > MaxSize) return false;
        newSize = AlignUp(newSize, BeConstants.PageSize);
        if (newSize <= Size) return true;
        if (newSize > MaxSize) return false;
        // The capture is checked first (the tx's state and credit): memory is committed only for a change that will
        // happen. It is made only once the memory is there: a refused growth leaves the transaction as it was.
        tx.CheckHeader(SegmentHeader.GeometryOffset, sizeof(long));
        int errno = _mem.TryCommit(newSize);
        if (errno != 0)
        {
            Domain.Options.Warn($"segment {Id} ({FileName}): cannot grow from {Size} to {newSize} bytes: the process cannot get the memory " +
                $"(mprotect errno {errno}); the allocation that asked for it is out of space");
            return false;
        }
        tx.CaptureHeader<long>(SegmentHeader.GeometryOffset) = newSize;
        return true;
    }

    /// <summary>Credit <see cref="Grow"/> needs.</summary>
    public static TxCredit GrowCredit => TxCredit.Of<long>();

    /// <summary>Opens a transaction on this segment, waiting asynchronously for log space if the log is full.</summary>
    /// <remarks>Call on the owner thread. Do not await anything between capturing and <see cref="Transaction.Close"/>.</remarks>
    /// <exception cref="InvalidOperationException">Called off the owner thread, or the segment has no owner
    /// (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the
    /// transaction opened, whether or not it had to wait (the task is cancelled; no log space stays reserved).</exception>
    public ValueTask<Transaction> BeginAsync(TxCredit credit, CancellationToken cancellationToken = default)
        => Tx.BeginAsync(credit, cancellationToken);

    /// <summary>Opens a transaction if log space for <paramref name="credit"/> is available now; never waits.</summary>
    /// <exception cref="InvalidOperationException">Called off the owner thread, or the segment has no owner
    /// (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public bool TryBegin(TxCredit credit, out Transaction tx) => Tx.TryBegin(credit, out tx);

    /// <summary>
    /// Refuses a reader or tool of the segment's memory (<paramref name="what"/>: "fsck", "b+tree save", ...) off its owner
    /// thread: the memory has no locks, the owner is the lock. Without an owner (tools on a bare domain) anyone may.
    /// Once the segment is closed every thread is off its (stopped) owner's: that is reported as the segment closed
    /// (<see cref="ObjectDisposedException"/>), which is what a caller holding it too long must learn.
    /// </summary>
    internal void CheckOwner(string what)
    {
        if (Tx.Owner is { IsOwnerThread: false })
        {
            if (!IsOpen) ThrowClosed();
            throw new InvalidOperationException($"segment {Id}: {what} must run on the segment's owner thread (its locality)");
        }
    }

    /// <summary>Binds the segment to its owner. Transactions can be opened only once a segment has an owner.</summary>
    public void Attach(ISegmentOwner owner) => Tx.Attach(owner);

    /// <summary>Called by the owner after each turn (posted callback): enforces that no transaction that captured anything stays open across a turn.</summary>
    public void EndTurn() => Tx.EndTurn();

    /// <summary>Called by the owner when its queue is empty: seals the open group if the log writer is waiting for work.</summary>
    public void OnOwnerIdle() => Tx.OnOwnerIdle();

    /// <summary>Asks for the open group to be sealed and written now; returns when everything closed so far on this segment is durable. Call on the owner thread.</summary>
    /// <exception cref="InvalidOperationException">Called off the owner thread (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public TxPersistence FlushAsync() => Tx.Flush();

    /// <summary>Transaction and group counters of this segment.</summary>
    public SegmentTxStats TxStats => Tx.Stats;

    internal static long AlignUp(long v, long a) => (v + a - 1) & ~(a - 1);

    private void ThrowRange(long offset, long length) =>
        throw new ArgumentOutOfRangeException(nameof(offset),
            $"segment {Id} ({FileName}): range [0x{offset:X}, +{length}) is outside the segment (size 0x{Size:X})");

    // Readers off the owner thread (monitoring reading a tree's counters) inside EnterForeignRead/ExitForeignRead.
    private int _foreignReaders;
    private int _closing;

    /// <summary>
    /// Starts a read of segment memory from a thread other than the owner's; false once the segment is closing.
    /// The memory is not unmapped while such a read is in progress, so a reader racing the engine's close gets
    /// false (or finishes first) instead of touching unmapped memory.
    /// </summary>
    internal bool EnterForeignRead()
    {
        Interlocked.Increment(ref _foreignReaders);
        if (Volatile.Read(ref _closing) == 0 && _mem.Base != null) return true;
        Interlocked.Decrement(ref _foreignReaders);
        return false;
    }

    internal void ExitForeignRead() => Interlocked.Decrement(ref _foreignReaders);

    /// <summary>Releases the memory image, once reads in progress off the owner thread are done. Only the domain calls this, after its log is closed.</summary>
    public void Dispose()
    {
        Interlocked.Exchange(ref _closing, 1);
        var spin = new SpinWait();
        while (Volatile.Read(ref _foreignReaders) != 0) spin.SpinOnce();
        _mem.Dispose();
    }

    /// <inheritdoc />
    public override string ToString() => $"segment {Id} ({FileName}, {Size} bytes)";
}
