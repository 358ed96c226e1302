namespace Motr.Be.Alloc;

/// <summary>An allocated block met by <see cref="Allocator.AllocatedBlocks"/>.</summary>
/// <param name="Offset">The block's offset as <see cref="Allocator.TryAlloc"/> returned it (the chunk's data, after its header).</param>
/// <param name="Size">Usable bytes of the block (<see cref="Allocator.UsableSize"/>): at least what was asked for.</param>
public readonly record struct AllocatedBlock(long Offset, long Size);

public sealed unsafe partial class Allocator
{
    // Allocs and frees made through this object (not persistent): lets a walk notice the heap changed under it.
    private long _changes;

    /// <summary>
    /// Every allocated block, in address order, found by walking the chunk chain from the heap start
    /// (reads only; the same walk as <see cref="Check"/>, without the free-list checks). Enumerate on the
    /// segment's owner thread and change nothing in the heap meanwhile: the walk reads the chain as it goes, so after
    /// an alloc, a free or the abort of a transaction that changed the heap it throws <see cref="InvalidOperationException"/>
    /// (a chunk freed into its free neighbour keeps a stale header the walk would report as a live block).
    /// </summary>
    /// <exception cref="BeCorruptionException">Thrown by the enumeration on reaching a damaged chunk header (its offset is named);
    /// the blocks before it have been returned. <see cref="Check"/> describes the damage. Also on meeting a heap top in memory
    /// outside [heap start, segment size] (the message names it).</exception>
    /// <exception cref="InvalidOperationException">Thrown by the enumeration when it is moved off the segment's owner thread
    /// (<see cref="ObjectDisposedException"/> once the segment is closed), or after the heap changed.</exception>
    public IEnumerable<AllocatedBlock> AllocatedBlocks()
    {
        // Each step reads the chain: each step checks the thread (an enumerator may be handed to another one).
        _seg.CheckOwner("allocator walk");
        WalkStamp stamp = Stamp();
        long c = HeapStartOffset();
        while (NextUsed(ref c, out var block))
        {
            yield return block;
            _seg.CheckOwner("allocator walk");
            if (Stamp() != stamp) ThrowWalkChanged();
        }
    }

    /// <summary>
    /// What a walk checks has not changed under it: the count of allocator changes (an alloc or a free), and the
    /// persistent counters and heap top, which an abort restores without the allocator knowing.
    /// </summary>
    private readonly record struct WalkStamp(long Changes, long HeapTop, long UsedChunks, long FreeChunks, long UsedBytes);

    private WalkStamp Stamp()
    {
        AllocatorState* s = S;
        return new WalkStamp(_changes, s->HeapTop, s->UsedChunks, s->FreeChunks, s->UsedBytes);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void ThrowWalkChanged() =>
        throw new InvalidOperationException($"segment {_seg.Id} ({_seg.FileName}): allocator walk: the heap changed since the walk " +
            "started (an alloc, a free or an abort); start a new walk");

    private long HeapStartOffset() => S->HeapStart;

    /// <summary>Advances <paramref name="chunk"/> along the chain to the next used chunk, past it; false at the heap top.</summary>
    private bool NextUsed(ref long chunk, out AllocatedBlock block)
    {
        long top = CheckedTop("walk");
        while (chunk < top)
        {
            long c = chunk;
            if (!HeaderValid(c)) ThrowCorrupt(c, "damaged chunk header in the chain (run Check for details)");
            ChunkHeader* h = H(c);
            chunk = c + h->Size;
            if (h->Flags == AllocFormat.FlagUsed)
            {
                block = new AllocatedBlock(c + Hdr, h->Size - Hdr);
                return true;
            }
        }
        block = default;
        return false;
    }
}
