namespace Motr.Be.Alloc;

/// <summary>An allocated block met by <see cref="Allocator.AllocatedBlocks"/>.</summary>
/// <param name="Offset">The block's offset as <see cref="Allocator.TryAlloc"/> returned it (the chunk's data, after its header).</param>
/// <param name="Size">Usable bytes of the block (<see cref="Allocator.UsableSize"/>): at least what was asked for.</param>
public readonly record struct AllocatedBlock(long Offset, long Size);

public sealed unsafe partial class Allocator
{
    /// <summary>
    /// Every allocated block, in address order, found by walking the chunk chain from the heap start
    /// (reads only; the same walk as <see cref="Check"/>, without the free-list checks). Enumerate on the
    /// segment's owner thread and change nothing in the segment meanwhile: the walk reads the chain as it goes.
    /// </summary>
    /// <exception cref="BeCorruptionException">Thrown by the enumeration on reaching a damaged chunk header (its offset is named);
    /// the blocks before it have been returned. <see cref="Check"/> describes the damage.</exception>
    /// <exception cref="InvalidOperationException">Thrown by the enumeration when it is moved off the segment's owner thread
    /// (<see cref="ObjectDisposedException"/> once the segment is closed).</exception>
    public IEnumerable<AllocatedBlock> AllocatedBlocks()
    {
        // Each step reads the chain: each step checks the thread (an enumerator may be handed to another one).
        _seg.CheckOwner("allocator walk");
        long c = HeapStartOffset();
        while (NextUsed(ref c, out var block))
        {
            yield return block;
            _seg.CheckOwner("allocator walk");
        }
    }

    private long HeapStartOffset() => S->HeapStart;

    /// <summary>Advances <paramref name="chunk"/> along the chain to the next used chunk, past it; false at the heap top.</summary>
    private bool NextUsed(ref long chunk, out AllocatedBlock block)
    {
        long top = S->HeapTop;
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
