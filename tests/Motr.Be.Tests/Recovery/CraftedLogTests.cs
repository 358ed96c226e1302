using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Motr.Be.Log;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Recovery;

/// <summary>
/// Logs crafted with valid checksums but impossible contents (a fuzzing pass found each): a group whose segment size
/// is negative or not a page multiple, a payload length near 2^32, a header slot whose checkpoint or geometry cannot
/// be, a header counting fewer segments than the folder holds. Each is refused as corruption, or recovered as a torn
/// tail to the state after the real transactions; none crashes the process, throws another kind of exception, or
/// replaces a segment that holds data.
/// </summary>
public class CraftedLogTests
{
    private const long Off = Engines.DataStart;
    private const string LogName = BeConstants.LogFileName;
    private const int Txs = 10;

    /// <summary>A packed group with a valid checksum; <paramref name="body"/> is what follows its header.</summary>
    private static byte[] Group(ulong segment, long segmentSize, uint regions, uint payloads, byte[] body)
    {
        var chunk = new byte[GroupHeader.SizeOf + body.Length];
        body.CopyTo(chunk, GroupHeader.SizeOf);
        var gh = new GroupHeader
        {
            Magic = BeConstants.GroupMagic, Length = (uint)chunk.Length, SegmentId = segment, GroupSeq = 1000, FirstTxId = 1000,
            TxCount = 1, RegionCount = regions, PayloadCount = payloads, Flags = GroupFlags.Packed, SegmentSize = segmentSize,
        };
        MemoryMarshal.Write(chunk, gh);
        gh.Crc = Crc32C.Compute(chunk.AsSpan(0, 60), chunk.AsSpan(GroupHeader.SizeOf));
        MemoryMarshal.Write(chunk, gh);
        return chunk;
    }

    /// <summary>Writes <paramref name="group"/> as a valid record after the log's last one (next lsn, next position).</summary>
    private static void Append(SimStorage s, byte[] group)
    {
        var last = LogImages.Records(s)[^1];
        long position = last.Offset - LogFormat.AreaOffset + last.Length;
        var rec = new byte[LogFormat.AlignSector(RecordHeader.SizeOf + group.Length)];
        group.CopyTo(rec, RecordHeader.SizeOf);
        var header = new RecordHeader
        {
            Magic = BeConstants.LogRecordMagic, Version = BeConstants.LogVersion, Lsn = last.Lsn + 1, Position = position,
            Length = (uint)rec.Length, GroupCount = 1, BodyLength = (uint)group.Length,
            GroupCrcs = ~Crc32C.Append(~0u, group.AsSpan(60, 4)), DomainId = BinaryPrimitives.ReadUInt64LittleEndian(s.ReadAll(LogName).AsSpan(16)),
        };
        MemoryMarshal.Write(rec, header);
        header.HeaderCrc = LogRecord.HeaderCrc(rec);
        MemoryMarshal.Write(rec, header);
        s.Overwrite(LogName, LogFormat.AreaOffset + position, rec);
    }

    /// <summary>Edits header slot <paramref name="slot"/> and seals its checksum again.</summary>
    private static void RewriteSlot(SimStorage s, int slot, Action<byte[]> edit)
    {
        var b = s.ReadAll(LogName).AsSpan(slot * BeConstants.SectorSize, LogHeaderSlot.SizeOf).ToArray();
        edit(b);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(LogHeaderSlot.CrcOffset), Crc32C.Compute(b.AsSpan(0, LogHeaderSlot.CrcOffset)));
        s.Overwrite(LogName, slot * BeConstants.SectorSize, b);
    }

    private static int NewestSlot(SimStorage s)
    {
        var log = s.ReadAll(LogName);
        return BinaryPrimitives.ReadUInt64LittleEndian(log.AsSpan(48)) >= BinaryPrimitives.ReadUInt64LittleEndian(log.AsSpan(BeConstants.SectorSize + 48)) ? 0 : 1;
    }

    /// <summary>
    /// Opens the image: either corruption naming the log, or a domain holding the state after the real transactions
    /// (value <see cref="Txs"/>); any other exception fails the test. Returns which.
    /// </summary>
    private static async Task<string> OpenRefusedOrIntact(SimStorage s, Action<DomainOptions>? tweak = null)
    {
        var o = Engines.Sim(s);
        tweak?.Invoke(o);
        try
        {
            await using var e = await Engines.Open(o);
            var loc = e.Localities[0];
            Assert.Equal(Txs, await loc.RunAsync(() => loc.Segment!.At<long>(Off)));
            return "recovered";
        }
        catch (BeCorruptionException ex)
        {
            Assert.Contains(LogName, ex.File);
            return "refused";
        }
    }

    private static byte[] Region(long offset, int length, long value)
    {
        var body = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(body, RegionDesc.Make(offset, length).Packed);
        BinaryPrimitives.WriteInt64LittleEndian(body.AsSpan(8), value);
        return body;
    }

    [Theory]
    [InlineData(long.MinValue, true)]            // offset > size - length overflowed: the region passed, and was copied outside the segment (the process died)
    [InlineData(-4096L, true)]
    [InlineData((256L << 10) + 100, false)]      // not a page multiple: committing memory failed with OutOfMemoryException
    [InlineData(BeConstants.MaxSegmentSize + 4096, false)]
    public async Task A_group_whose_segment_size_cannot_be_is_refused_or_cut(long segmentSize, bool withRegion)
    {
        var s = await LogImages.CrashedWithTenRecords();
        Append(s, withRegion ? Group(1, segmentSize, 1, 0, Region(3L << 20, 8, 777)) : Group(1, segmentSize, 0, 0, []));
        Append(s, Group(1, 512 << 10, 0, 0, []));
        await OpenRefusedOrIntact(s);
    }

    [Theory]
    [InlineData(0x8000_0000u, false)]            // cast to int, the length went negative and the shape check read backwards
    [InlineData(0xFFFF_FFF8u, true)]             // the shape check passed; handing the payload over sliced out of range
    public async Task A_payload_length_near_2_to_the_32_is_refused_or_cut(uint length, bool payloadCallback)
    {
        var s = await LogImages.CrashedWithTenRecords();
        var body = new byte[32];
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(8), length);
        Append(s, Group(1, 256 << 10, 0, 2, body));
        await OpenRefusedOrIntact(s, payloadCallback ? o => o.OnRecoveredPayload = _ => { } : null);
    }

    [Theory]
    [InlineData(long.MinValue)]
    [InlineData(-512L)]
    [InlineData(100L)]
    [InlineData(long.MaxValue - 511)]
    [InlineData(1L << 62)]
    public async Task A_header_slot_with_an_impossible_checkpoint_is_not_trusted(long position)
    {
        var s = await LogImages.CrashedWithTenRecords();
        RewriteSlot(s, NewestSlot(s), b => BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(56), position));
        // The other slot (older, valid) is used, or the log is refused: never a read at a wild offset.
        await OpenRefusedOrIntact(s);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(512L)]
    public async Task A_log_whose_header_gives_a_tiny_record_area_is_refused(long area)
    {
        var s = await LogImages.CrashedWithTenRecords();
        for (int slot = 0; slot < 2; slot++)
            RewriteSlot(s, slot, b =>
            {
                BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(24), LogFormat.AreaOffset + area);
                BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(40), area);
            });
        using (var f = s.Open(LogName, StorageOpenMode.OpenExisting)) f.SetLength(LogFormat.AreaOffset + area);
        Assert.Equal("refused", await OpenRefusedOrIntact(s));
    }

    /// <summary>
    /// A domain whose 1 MiB log has wrapped (3000 one-record transactions, each capturing <paramref name="bytes"/>
    /// bytes, the first 8 its number): its newest record sits a lap or more past its physical place.
    /// </summary>
    private static async Task<(SimStorage Image, long Position, ulong Lsn)> WrappedLog(int bytes = 8)
    {
        var storage = new SimStorage();
        var o = Engines.Sim(storage);
        o.CheckpointFraction = 0.5;
        await using (var e = await Engines.Open(o))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                for (int i = 1; i <= 3000; i++)
                {
                    using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(bytes));
                    tx.Capture(Off, bytes);
                    loc.Segment!.At<long>(Off) = i;
                    await tx.Close();
                }
            });
            storage = storage.Clone();
        }
        var log = storage.ReadAll(LogName);
        long bestPos = -1;
        ulong bestLsn = 0;
        for (long off = LogFormat.AreaOffset; off + RecordHeader.SizeOf <= log.Length; off += BeConstants.SectorSize)
        {
            var h = MemoryMarshal.Read<RecordHeader>(log.AsSpan((int)off));
            if (h.Magic != BeConstants.LogRecordMagic || h.Lsn <= bestLsn || LogRecord.HeaderCrc(log.AsSpan((int)off)) != h.HeaderCrc) continue;
            bestLsn = h.Lsn;
            bestPos = h.Position;
        }
        return (storage, bestPos, bestLsn);
    }

    /// <summary>
    /// A wrapped log whose newest header slot is damaged, and whose other slot's checkpoint lies a lap behind the newest
    /// record's place (or a sector into it, where the record's body is): what a damaged newest slot looks like once the
    /// writer has gone a lap past the previous checkpoint.
    /// </summary>
    private static async Task<(SimStorage Image, int Newest, long Checkpoint, ulong CheckpointLsn)> WrappedOverOlderCheckpoint(bool midRecord)
    {
        var (s, position, lsn) = await WrappedLog(midRecord ? 2000 : 8);
        long area = BinaryPrimitives.ReadInt64LittleEndian(s.ReadAll(LogName).AsSpan(40));
        Assert.True(position >= area, $"the log did not wrap: newest record at position {position}, area {area}");
        long checkpoint = position - area + (midRecord ? BeConstants.SectorSize : 0);
        if (midRecord) Assert.True(MemoryMarshal.Read<RecordHeader>(s.ReadAll(LogName).AsSpan((int)(LogFormat.AreaOffset + position % area))).Length > BeConstants.SectorSize);
        int newest = NewestSlot(s);
        RewriteSlot(s, 1 - newest, b =>
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(56), checkpoint);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(64), lsn - 10);
        });
        s.Overwrite(LogName, newest * BeConstants.SectorSize + 60, [0xEE]);
        return (s, newest, checkpoint, lsn - 10);
    }

    private static void AssertWrappedOver(BeCorruptionException ex, int newest, long checkpoint, ulong lsn)
    {
        Assert.Contains($"the newest checkpoint is lost (header slot {newest}: checksum mismatch)", ex.Message);
        Assert.Contains($"the checkpoint in use (lsn {lsn} at position {checkpoint}) is out of date", ex.Message);
        Assert.Contains("the log has wrapped over that checkpoint", ex.Message);
    }

    [Theory]
    [InlineData(RecoveryMode.Strict, false)]
    [InlineData(RecoveryMode.TruncateAtCorruption, false)]
    [InlineData(RecoveryMode.Strict, true)]
    [InlineData(RecoveryMode.TruncateAtCorruption, true)]
    public async Task A_checkpoint_the_log_has_wrapped_over_is_refused_in_every_mode(RecoveryMode mode, bool midRecord)
    {
        // Before, this opened in both modes with nothing replayed: the later lap's record (or the middle of one)
        // at the checkpoint's place read as the end of the log, and every record after the lost checkpoint was dropped.
        var (s, newest, checkpoint, lsn) = await WrappedOverOlderCheckpoint(midRecord);
        var before = s.ReadAll(LogName);
        var o = Engines.Sim(s);
        o.RecoveryMode = mode;
        AssertWrappedOver(await Assert.ThrowsAsync<BeCorruptionException>(() => Engines.Open(o)), newest, checkpoint, lsn);
        Assert.Equal(before, s.ReadAll(LogName)); // nothing cut or wiped
    }

    // An open asking for more segments wrote the new count into the log header before recovery, into the next slot:
    // the damaged newest one. Recovery then refused, as above, but the evidence was gone: the slot now held the older
    // checkpoint, intact, and the next open replayed from it as if nothing were lost, dropping every record after the
    // lost checkpoint. The count is now written after recovery, which refuses first.
    [Fact]
    public async Task An_open_adding_segments_to_a_log_wrapped_over_its_checkpoint_refuses_and_leaves_the_evidence()
    {
        var (s, newest, checkpoint, lsn) = await WrappedOverOlderCheckpoint(midRecord: false);
        var before = s.ReadAll(LogName);
        var o = Engines.Sim(s, segments: 3);
        AssertWrappedOver(await Assert.ThrowsAsync<BeCorruptionException>(() => Engines.Open(o)), newest, checkpoint, lsn);
        Assert.Equal(before, s.ReadAll(LogName));
        // Every later open, adding segments or not, refuses the same way.
        AssertWrappedOver(await Assert.ThrowsAsync<BeCorruptionException>(() => Engines.Open(Engines.Sim(s))), newest, checkpoint, lsn);
        AssertWrappedOver(await Assert.ThrowsAsync<BeCorruptionException>(() => Engines.Open(Engines.Sim(s, segments: 3))), newest, checkpoint, lsn);
    }

    // Since 602ca5c an open adding segments writes the new count after recovery, into one header slot: the other slot
    // kept the old count until the next checkpoint. The log may meanwhile hold records of the added segment; with the
    // newest slot then lost (the damage one slot is there to survive), the older slot's checkpoint is intact and
    // replaying from it is right, but its count left the added segment out, and the open refused a sound domain
    // ("names segment 2, which the domain does not have", or the added file "holds transactions"). Both slots get it.
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Records_of_an_added_segment_replay_when_the_newest_header_slot_is_lost_before_the_next_checkpoint(int reopenWith)
    {
        var s = new SimStorage();
        await (await Engines.Open(Engines.Sim(s, segments: 1))).DisposeAsync();
        SimStorage crashed;
        await using (var e = await Engines.Open(Engines.Sim(s, segments: 2)))
        {
            var loc = e.Localities[1];
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Engines.DataStart) = 77;
                await tx.Close(); // durable in the log; no checkpoint since the open
            });
            crashed = s.Clone();
        }
        crashed.Overwrite(LogName, NewestSlot(crashed) * BeConstants.SectorSize + 60, [0xEE]);
        await using var again = await Engines.Open(Engines.Sim(crashed, segments: reopenWith));
        Assert.Equal(2, again.Localities.Count);
        var l2 = again.Localities[1];
        Assert.Equal(77L, await l2.RunAsync(() => l2.Segment!.At<long>(Engines.DataStart)));
    }

    [Fact]
    public async Task An_older_checkpoint_the_log_has_not_wrapped_over_still_recovers_everything()
    {
        var (s, position, _) = await WrappedLog();
        var log = s.ReadAll(LogName);
        long area = BinaryPrimitives.ReadInt64LittleEndian(log.AsSpan(40));
        // The oldest record still in the log: the one just after the newest record's place, from the lap before.
        uint newestLength = MemoryMarshal.Read<RecordHeader>(log.AsSpan((int)(LogFormat.AreaOffset + position % area))).Length;
        var oldest = MemoryMarshal.Read<RecordHeader>(log.AsSpan((int)(LogFormat.AreaOffset + (position + newestLength) % area)));
        Assert.Equal(position + newestLength - area, oldest.Position);
        int newest = NewestSlot(s);
        RewriteSlot(s, 1 - newest, b =>
        {
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(56), oldest.Position);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(64), oldest.Lsn);
        });
        s.Overwrite(LogName, newest * BeConstants.SectorSize + 60, [0xEE]);
        // Replaying a whole lap from there, in order, ends in the state of the last transaction.
        await using var e = await Engines.Open(Engines.Sim(s));
        var loc = e.Localities[0];
        Assert.Equal(3000, await loc.RunAsync(() => loc.Segment!.At<long>(Off)));
    }

    [Fact]
    public async Task A_header_counting_fewer_segments_than_the_folder_holds_replaces_none()
    {
        var s = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(s)))
            foreach (var loc in e.Localities)
                await loc.RunAsync(async () =>
                {
                    using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                    tx.Capture<long>(Off) = 4242;
                    await tx.Close();
                });
        var before = s.ReadAll(BeConstants.SegmentFileName(2));
        Assert.Equal(4242, BinaryPrimitives.ReadInt64LittleEndian(before.AsSpan((int)Off)));
        RewriteSlot(s, NewestSlot(s), b => BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(80), 1));
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => Engines.Open(Engines.Sim(s)));
        Assert.Contains(BeConstants.SegmentFileName(2), ex.File);
        Assert.Contains("refusing to replace it", ex.Message);
        Assert.Equal(before, s.ReadAll(BeConstants.SegmentFileName(2)));
    }
}
