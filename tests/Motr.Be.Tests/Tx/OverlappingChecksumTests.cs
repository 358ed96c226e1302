using System.Collections.Concurrent;
using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// Deferred checksums of blocks that overlap. The seal computes each block's CRC from memory and writes it into the
/// block's CRC field; when two pending blocks overlap, one block's CRC field lies in the other's bytes, so whichever is
/// sealed second changes the first after its CRC was computed, and the first fails its checksum when read back.
/// Before: accepted (in one transaction or across the group), the damage found only at the next open. Now: the second
/// block is refused at its defer, naming both, nothing deferred; the exact same block again stays free; a block freed
/// (<see cref="Transaction.CancelChecksum"/>) no longer counts, so its place may be reused by an overlapping block.
/// </summary>
public sealed class OverlappingChecksumTests
{
    private const long A = Engines.DataStart + 1024;   // block A: [A, A + 64), CRC at +60
    private const long B = A + 32;                     // block B: [B, B + 64), CRC at +0 — lies in A's bytes

    private static void Fill(Transaction tx, long at, int length, byte value) => tx.Capture(at, length).Fill(value);

    private static async Task<(bool A, bool B)> ReopenAndVerify(SimStorage storage)
    {
        await using var e = await Engines.Open(Engines.Sim(storage, segments: 1));
        var loc = e.Localities[0];
        return await loc.RunAsync(() =>
        {
            var seg = loc.Segment!;
            return (BlockChecksum.Verify(seg.Bytes(A, 64), 60), BlockChecksum.Verify(seg.Bytes(B, 64), 0));
        });
    }

    [Fact]
    public async Task A_block_overlapping_one_deferred_in_the_same_transaction_is_refused_naming_both()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                using var tx = await seg.BeginAsync(new TxCredit(16, 4096));
                Fill(tx, A, 96, 0x11);
                tx.DeferChecksum(A, 64, 60);
                var used = tx.Used;
                tx.DeferChecksum(A, 64, 60);                       // the same block again: free, as before
                Assert.Equal(used, tx.Used);
                // Before: accepted; at seal B's CRC landed in A's bytes after A's CRC was computed.
                var ex = Assert.Throws<TxUsageException>(() => tx.DeferChecksum(B, 64, 0));
                Assert.Contains($"0x{A:X}", ex.Message);
                Assert.Contains($"0x{B:X}", ex.Message);
                Assert.Equal(used, tx.Used);                        // nothing deferred
                ex = Assert.Throws<TxUsageException>(() => tx.DeferPlacedChecksum(A - 32, 64, 0, 0x1234));
                Assert.Contains($"0x{A:X}", ex.Message);
                Assert.Equal(used, tx.Used);
                tx.DeferChecksum(A + 64, 32, 0);                   // adjacent, not overlapping: fine
                await tx.Close();
            });
        }
        Assert.True((await ReopenAndVerify(storage)).A, "block A fails its checksum after reopen");
    }

    [Fact]
    public async Task A_block_overlapping_one_pending_in_the_open_group_is_refused_naming_both()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                var t1 = await seg.BeginAsync(new TxCredit(16, 4096));
                Fill(t1, A, 96, 0x11);
                t1.DeferChecksum(A, 64, 60);
                var p1 = t1.Close();                                // not awaited: the group stays open
                using var t2 = await seg.BeginAsync(new TxCredit(16, 4096));
                Fill(t2, A, 96, 0x22);
                t2.DeferChecksum(A, 64, 60);                       // A again, in another transaction: fine
                var used = t2.Used;
                // Before: accepted; the group sealed both and A failed its checksum at the next open.
                var ex = Assert.Throws<TxUsageException>(() => t2.DeferChecksum(B, 64, 0));
                Assert.Contains($"0x{A:X}", ex.Message);
                Assert.Contains($"0x{B:X}", ex.Message);
                Assert.Equal(used, t2.Used);
                await t2.Close();
                await p1;
                t1.Dispose();
            });
        }
        Assert.True((await ReopenAndVerify(storage)).A, "block A fails its checksum after reopen");
    }

    [Fact]
    public async Task A_block_freed_in_the_group_may_be_overlapped_by_a_new_one()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                var t1 = await seg.BeginAsync(new TxCredit(16, 4096));
                Fill(t1, A, 96, 0x11);
                t1.DeferChecksum(A, 64, 60);
                var p1 = t1.Close();
                // Freed in a later transaction of the group, then its place reused by B in the same one.
                var t2 = await seg.BeginAsync(new TxCredit(16, 4096));
                t2.CancelChecksum(A);
                Fill(t2, A, 96, 0x22);
                t2.DeferChecksum(B, 64, 0);
                var p2 = t2.Close();
                // And back: B freed within a transaction, A reused in it.
                using var t3 = await seg.BeginAsync(new TxCredit(16, 4096));
                t3.DeferChecksum(A + 100, 8, 0);
                t3.CancelChecksum(B);
                t3.DeferChecksum(A, 64, 60);
                Assert.Throws<TxUsageException>(() => t3.DeferChecksum(A + 96, 8, 0)); // overlaps A + 100's block
                await t3.Close();
                await p1;
                await p2;
                t1.Dispose();
                t2.Dispose();
            });
        }
        Assert.True((await ReopenAndVerify(storage)).A, "block A fails its checksum after reopen");
    }

    [Fact]
    public async Task A_rolled_back_block_no_longer_counts()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(new TxCredit(16, 4096));
            var sp = tx.Savepoint();
            tx.DeferChecksum(A, 64, 60);
            tx.RollbackTo(sp);
            tx.DeferChecksum(B, 64, 0);
            await tx.Close();
        });
    }

    /// <summary>
    /// Two transactions open at once cannot see each other's marks, so neither is refused; the seal finds the overlap,
    /// says so (<see cref="DomainOptions.OnWarning"/>, naming both blocks) and leaves the block that starts later
    /// unchecksummed rather than write its CRC into the other's bytes.
    /// </summary>
    [Fact]
    public async Task Overlapping_blocks_of_two_transactions_open_at_once_are_reported_at_seal_and_the_first_kept_intact()
    {
        var storage = new SimStorage();
        var warnings = new ConcurrentQueue<string>();
        var o = Engines.Sim(storage, segments: 1);
        o.OnWarning = warnings.Enqueue;
        await using (var e = await Engines.Open(o))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                using var t1 = await seg.BeginAsync(new TxCredit(16, 4096));
                using var t2 = await seg.BeginAsync(new TxCredit(16, 4096));
                Fill(t1, A, 96, 0x11);
                t1.DeferChecksum(A, 64, 60);
                t2.DeferChecksum(B, 64, 0);
                var p1 = t1.Close();
                await t2.Close();
                await p1;
            });
        }
        Assert.True((await ReopenAndVerify(storage)).A, "block A fails its checksum after reopen");
        Assert.Contains(warnings, w => w.Contains($"0x{A:X}") && w.Contains($"0x{B:X}"));
    }

    [Fact]
    public async Task Bad_blocks_are_still_refused_before_any_overlap_check()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(new TxCredit(16, 4096));
            tx.DeferChecksum(A, 64, 60);
            Assert.Contains("length 0", Assert.Throws<TxUsageException>(() => tx.DeferChecksum(A, 0, 0)).Message);
            Assert.Contains("length -64", Assert.Throws<TxUsageException>(() => tx.DeferChecksum(A + 8, -64, 0)).Message);
            Assert.Contains("crcOffset 64", Assert.Throws<TxUsageException>(() => tx.DeferChecksum(A + 8, 64, 64)).Message);
            Assert.Contains("outside", Assert.Throws<TxUsageException>(() => tx.DeferChecksum(seg.Size - 32, 64, 0)).Message);
            Assert.Equal(Transaction.ChecksumCredit, tx.Used);
            await tx.Close();
        });
    }
}
