namespace Motr.Be.Segments;

public sealed unsafe partial class Segment
{
    // One bit per 64 bytes of address space: which checksummed blocks have been verified since open.
    // A block's deferred checksum is valid in every durable state, so it is checked the first time the
    // block is read after open — always before anything in this session changes it — and never again.
    private ulong[] _verified = [];

    /// <summary>
    /// Checks the CRC32C of a checksummed block (see <see cref="BlockChecksum"/>) the first time it is read
    /// after open; later calls return true at once. Returns false if the checksum does not match.
    /// </summary>
    public bool VerifyOnce(long block, int length, int crcOffset)
    {
        if (IsSet(_verified, block)) return true;
        if (!BlockChecksum.Verify(Bytes(block, length), crcOffset)) return false;
        MarkVerified(block);
        return true;
    }

    /// <summary>Records that the block at <paramref name="block"/> needs no verification this session (it was created in it).</summary>
    public void MarkVerified(long block) => Set(ref _verified, block);

    // One bit per 64 bytes: blocks whose checksum is computed at placing (Transaction.DeferPlacedChecksum)
    // and that changed this session, so the checksum in memory is the one they were loaded with.
    private ulong[] _stale = [];

    /// <summary>
    /// Records that the block's checksum in memory no longer matches its bytes (it is computed when placed).
    /// It also counts as verified: it was read (and verified) before it changed, or created this session.
    /// </summary>
    internal void MarkChecksumStale(long block)
    {
        MarkVerified(block);
        Set(ref _stale, block);
    }

    /// <summary>
    /// Whether the block at <paramref name="block"/> changed this session under a checksum computed at
    /// placing: its checksum in memory is stale and cannot be verified there (the copy in the segment file
    /// gets a current one at each checkpoint; the block is verified when next loaded).
    /// </summary>
    public bool ChecksumStale(long block) => IsSet(_stale, block);

    // The two maps above: bit (block / 64), grown on demand to cover the segment.
    private static bool IsSet(ulong[] map, long block)
    {
        long bit = block >> 6;
        long word = bit >> 6;
        return word < map.Length && (map[word] & (1UL << (int)bit)) != 0;
    }

    private void Set(ref ulong[] map, long block)
    {
        long bit = block >> 6;
        long word = bit >> 6;
        if (word >= map.Length) Array.Resize(ref map, (int)Math.Max(word + 1, (Size >> 12) + 1));
        map[word] |= 1UL << (int)bit;
    }
}
