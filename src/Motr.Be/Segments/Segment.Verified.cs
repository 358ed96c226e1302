namespace Motr.Be.Segments;

public sealed unsafe partial class Segment
{
    // Two bits per 64 bytes of address space, side by side so a touched block's both are in one cache line:
    //  - verified: the checksummed block has been verified since open. A block's deferred checksum is valid in
    //    every durable state, so it is checked the first time the block is read after open — always before
    //    anything in this session changes it — and never again;
    //  - stale: the block's checksum is computed at placing (Transaction.DeferPlacedChecksum) and the block
    //    changed this session, so the checksum in memory is the one it was loaded with.
    private ulong[] _blockBits = [];
    private const int Verified = 1, Stale = 2;

    /// <summary>
    /// Checks the CRC32C of a checksummed block (see <see cref="BlockChecksum"/>) the first time it is read
    /// after open; later calls return true at once. Returns false if the checksum does not match.
    /// </summary>
    public bool VerifyOnce(long block, int length, int crcOffset)
    {
        if (IsSet(block, Verified)) return true;
        if (!BlockChecksum.Verify(Bytes(block, length), crcOffset)) return false;
        MarkVerified(block);
        return true;
    }

    /// <summary>Whether the block at <paramref name="block"/> was verified, created or changed this session (false for an offset outside the segment).</summary>
    public bool IsVerified(long block) => block >= 0 && IsSet(block, Verified);

    /// <summary>Records that the block at <paramref name="block"/> needs no verification this session (it was created in it).</summary>
    public void MarkVerified(long block) => Set(block, Verified);

    /// <summary>
    /// Records that the block's checksum in memory no longer matches its bytes (it is computed when placed).
    /// It also counts as verified: it was read (and verified) before it changed, or created this session.
    /// </summary>
    internal void MarkChecksumStale(long block) => Set(block, Verified | Stale);

    /// <summary>
    /// Whether the block at <paramref name="block"/> changed this session under a checksum computed at
    /// placing: its checksum in memory is stale and cannot be verified there (the copy in the segment file
    /// gets a current one at each checkpoint; the block is verified when next loaded).
    /// </summary>
    public bool ChecksumStale(long block) => IsSet(block, Stale);

    // Bits (2 * (block / 64)) and the one after it, grown on demand to cover the segment.
    private bool IsSet(long block, int bits)
    {
        long pair = block >> 6;
        long word = pair >> 5;
        return word < _blockBits.Length && (_blockBits[word] & ((ulong)bits << (int)((pair & 31) << 1))) != 0;
    }

    private void Set(long block, int bits)
    {
        long pair = block >> 6;
        long word = pair >> 5;
        if (word >= _blockBits.Length) Array.Resize(ref _blockBits, (int)Math.Max(word + 1, (Size >> 11) + 1));
        _blockBits[word] |= (ulong)bits << (int)((pair & 31) << 1);
    }
}
