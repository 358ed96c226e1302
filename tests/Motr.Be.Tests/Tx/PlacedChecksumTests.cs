using System.Buffers.Binary;
using Motr.Be.Alloc;
using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// Checksums computed at placing (<see cref="Transaction.DeferPlacedChecksum"/>, used for b+tree nodes):
/// written into the segment file before a checkpoint, recomputed by recovery in memory and file, and never
/// written over a block that was freed meanwhile.
/// </summary>
public class PlacedChecksumTests
{
    private const uint Magic = 0x4B434C42; // "BLCK"
    private const int BlockSize = 1024;
    private const int CrcOffset = 8;

    private static TxCredit WriteCredit => Allocator.AllocCredit + TxCredit.Region(BlockSize) + Transaction.ChecksumCredit;

    /// <summary>Allocates a block, fills it with <paramref name="fill"/> behind the magic and asks for its checksum at placing.</summary>
    private static async Task<long> NewBlock(Segment seg, byte fill)
    {
        using var tx = await seg.BeginAsync(WriteCredit);
        long b = seg.Allocator.Alloc(tx, BlockSize, 64);
        var span = tx.Capture(b, BlockSize);
        span.Fill(fill);
        BinaryPrimitives.WriteUInt32LittleEndian(span, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(span[CrcOffset..], 0);
        tx.DeferPlacedChecksum(b, BlockSize, CrcOffset, Magic);
        await tx.Close();
        return b;
    }

    private static async Task Change(Segment seg, long b, byte fill)
    {
        using var tx = await seg.BeginAsync(TxCredit.Region(100) + Transaction.ChecksumCredit);
        tx.Capture(b + 200, 100).Fill(fill);
        tx.DeferPlacedChecksum(b, BlockSize, CrcOffset, Magic);
        await tx.Close();
    }

    private static bool FileChecksumValid(SimStorage s, Segment seg, long b) =>
        BlockChecksum.Verify(s.ReadAll(BeConstants.SegmentFileName(seg.Id)).AsSpan((int)b, BlockSize), CrcOffset);

    [Fact]
    public async Task The_checksum_reaches_the_segment_file_at_checkpoint_while_memory_keeps_the_stale_one()
    {
        var storage = new SimStorage();
        await using var e = await Engines.Open(Engines.Sim(storage));
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        long b = await loc.RunAsync(async () =>
        {
            long b = await NewBlock(seg, 0x11);
            await Change(seg, b, 0x22);
            return b;
        });
        await loc.RunAsync(() =>
        {
            Assert.True(seg.ChecksumStale(b));
            Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(seg.Bytes(b + CrcOffset, 4)));
        });
        long before = e.Domain.Stats.Placing.Checksums;
        await e.Domain.CheckpointAsync();
        Assert.True(FileChecksumValid(storage, seg, b), "the placer computed the block's checksum in the file");
        Assert.Equal(before + 1, e.Domain.Stats.Placing.Checksums);
        await loc.RunAsync(() => Assert.Equal(0x22, seg.Bytes(b + 250, 1)[0]));
    }

    [Fact]
    public async Task Recovery_computes_the_checksums_of_replayed_groups_in_memory_and_in_the_file()
    {
        var storage = new SimStorage();
        long b = 0;
        ulong e0Id;
        SimStorage crashed;
        await using (var e = await Engines.Open(Engines.Sim(storage)))
        {
            var loc = e.Localities[0];
            var seg = loc.Segment!;
            e0Id = seg.Id;
            b = await loc.RunAsync(async () =>
            {
                long b = await NewBlock(seg, 0x11);
                await Change(seg, b, 0x33);
                return b;
            });
            crashed = storage.Clone(); // the log holds the groups, nothing is checkpointed
        }
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(crashed.ReadAll(BeConstants.SegmentFileName(e0Id)).AsSpan((int)b + CrcOffset, 4)));

        await using (var e = await Engines.Open(Engines.Sim(crashed)))
        {
            var loc = e.Localities[0];
            var seg = loc.Segment!;
            Assert.True(e.Domain.Recovery.RecordsReplayed > 0);
            await loc.RunAsync(() =>
            {
                Assert.False(seg.ChecksumStale(b));
                Assert.True(BlockChecksum.Verify(seg.Bytes(b, BlockSize), CrcOffset), "recovery sealed the checksum in memory");
                Assert.Equal(0x33, seg.Bytes(b + 250, 1)[0]);
            });
            Assert.True(FileChecksumValid(crashed, seg, b), "recovery's checkpoint wrote it into the file");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_freed_block_reused_for_other_data_never_receives_a_pending_checksum(bool sameTx)
    {
        var storage = new SimStorage();
        await using var e = await Engines.Open(Engines.Sim(storage));
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        // The new owner's data starts with the same 4 bytes as the freed block, so the magic check alone cannot tell.
        byte[] data = new byte[BlockSize];
        data.AsSpan().Fill(0x5C);
        BinaryPrimitives.WriteUInt32LittleEndian(data, Magic);
        long reused = await loc.RunAsync(async () =>
        {
            long b = await NewBlock(seg, 0x11);
            using var tx = await seg.BeginAsync(Allocator.FreeCredit + WriteCredit + Transaction.ChecksumCredit);
            if (sameTx) tx.DeferPlacedChecksum(b, BlockSize, CrcOffset, Magic); // changed, then freed, in one tx
            seg.Allocator.Free(tx, b);
            long again = seg.Allocator.Alloc(tx, BlockSize, 64);
            Assert.Equal(b, again); // the test means the same place
            data.CopyTo(tx.Capture(again, BlockSize));
            await tx.Close();
            return again;
        });
        await e.Domain.CheckpointAsync();
        Assert.Equal(data, storage.ReadAll(BeConstants.SegmentFileName(seg.Id)).AsSpan((int)reused, BlockSize).ToArray());
        await loc.RunAsync(() => Assert.Equal(data, seg.Bytes(reused, BlockSize).ToArray()));
    }

    [Fact]
    public async Task A_cancel_is_dropped_with_the_savepoint_it_followed()
    {
        var storage = new SimStorage();
        await using var e = await Engines.Open(Engines.Sim(storage));
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        long b = await loc.RunAsync(async () =>
        {
            long b = await NewBlock(seg, 0x11);
            using var tx = await seg.BeginAsync(Allocator.FreeCredit + TxCredit.Region(100) + Transaction.ChecksumCredit);
            tx.Capture(b + 200, 100).Fill(0x44);
            tx.DeferPlacedChecksum(b, BlockSize, CrcOffset, Magic);
            var sp = tx.Savepoint();
            seg.Allocator.Free(tx, b);
            tx.RollbackTo(sp); // the free never happened: the block's checksum is still due
            await tx.Close();
            return b;
        });
        await e.Domain.CheckpointAsync();
        Assert.True(FileChecksumValid(storage, seg, b));
    }

    [Fact]
    public void A_packed_checksum_descriptor_keeps_every_field_at_its_limits()
    {
        var cases = new[]
        {
            new Log.ChecksumDesc { Block = BeConstants.MaxSegmentSize - 8, Length = uint.MaxValue, CrcOffset = Log.PackedChecksumDesc.MaxCrcOffset, Magic = uint.MaxValue, Kind = Log.ChecksumDescKind.Placed },
            new Log.ChecksumDesc { Block = 4096, Length = 1024, CrcOffset = 0, Magic = Magic, Kind = Log.ChecksumDescKind.Placed },
            new Log.ChecksumDesc { Block = 0x7_1234_5678, Kind = Log.ChecksumDescKind.Cancel },
        };
        foreach (var d in cases)
        {
            var back = Log.PackedChecksumDesc.From(d).ToDesc();
            Assert.Equal((d.Block, d.Length, d.CrcOffset, d.Magic, d.Kind), (back.Block, back.Length, back.CrcOffset, back.Magic, back.Kind));
        }
    }

    [Fact]
    public async Task A_checksum_field_beyond_what_the_log_descriptor_holds_is_refused_before_anything_changes()
    {
        var storage = new SimStorage();
        await using var e = await Engines.Open(Engines.Sim(storage, segmentSize: 2 << 20));
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        var ex = await loc.RunAsync(async () =>
        {
            using var tx = await seg.BeginAsync(Transaction.ChecksumCredit);
            var thrown = Assert.Throws<ArgumentOutOfRangeException>(() => tx.DeferPlacedChecksum(Engines.DataStart, 1 << 20, Log.PackedChecksumDesc.MaxCrcOffset + 1, Magic));
            Assert.Equal(TxCredit.Zero, tx.Used);
            tx.Abort();
            return thrown;
        });
        Assert.Contains("524288", ex.Message);
    }
}
