using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Motr.Be.Log;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

using static Motr.Be.Tests.Recovery.LogImages;

namespace Motr.Be.Tests.Recovery;

/// <summary>Damaged files: each gives the documented behaviour and a message naming what and where.</summary>
public class BadInputTests
{
    private const long Off = Engines.DataStart;
    private const string Seg1 = "seg-0001.motr", Seg2 = "seg-0002.motr", LogName = "motr.log";

    private static void Flip(SimStorage s, string file, long offset)
    {
        var b = s.ReadAll(file);
        s.Overwrite(file, offset, new[] { (byte)(b[offset] ^ 0x5A) });
    }

    private static async Task<(long Value, long LastTx, Motr.Be.Recovery.RecoveryReport Report)> OpenAndRead(SimStorage s, RecoveryMode mode = RecoveryMode.Strict)
    {
        var o = Engines.Sim(s);
        o.RecoveryMode = mode;
        await using var e = await Engines.Open(o);
        var loc = e.Localities[0];
        long v = await loc.RunAsync(() => loc.Segment!.At<long>(Off));
        return (v, loc.Segment!.LastTxId, e.Domain.Recovery);
    }

    [Fact]
    public async Task Intact_crash_image_recovers_everything()
    {
        var s = await CrashedWithTenRecords();
        Assert.Equal(10, Records(s).Count);
        var (v, last, report) = await OpenAndRead(s);
        Assert.Equal(10, v);
        Assert.Equal(10, last);
        Assert.Equal(10, report.RecordsReplayed);
        Assert.Null(report.TornTail);
    }

    /// <summary>Rewrites the version of both header slots and of every record header, with their checksums.</summary>
    private static void SetLogVersion(SimStorage s, uint version)
    {
        var log = s.ReadAll(LogName);
        for (int slot = 0; slot < 2; slot++)
        {
            var b = log.AsSpan(slot * BeConstants.SectorSize, LogHeaderSlot.SizeOf).ToArray();
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), version);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(LogHeaderSlot.CrcOffset), Crc32C.Compute(b.AsSpan(0, LogHeaderSlot.CrcOffset)));
            s.Overwrite(LogName, slot * BeConstants.SectorSize, b);
        }
        SetRecordVersion(s, 0, version);
    }

    /// <summary>Rewrites the version of every record header from the <paramref name="first"/>-th on, with their checksums.</summary>
    private static void SetRecordVersion(SimStorage s, int first, uint version)
    {
        var log = s.ReadAll(LogName);
        foreach (var r in Records(s).Skip(first))
        {
            var h = log.AsSpan((int)r.Offset, RecordHeader.SizeOf).ToArray();
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), version);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(60), LogRecord.HeaderCrc(h));
            s.Overwrite(LogName, r.Offset, h);
        }
    }

    // A newer build's header slot holding the newest checkpoint was skipped and the older slot used: recovery replayed
    // from a checkpoint the newer build had moved past, in a log it had written on.
    [Fact]
    public async Task A_newest_header_slot_of_a_newer_format_is_refused_naming_it()
    {
        var s = await CrashedWithTenRecords();
        var log = s.ReadAll(LogName);
        int newest = MemoryMarshal.Read<LogHeaderSlot>(log.AsSpan(0)).SlotSeq > MemoryMarshal.Read<LogHeaderSlot>(log.AsSpan(BeConstants.SectorSize)).SlotSeq ? 0 : 1;
        var b = log.AsSpan(newest * BeConstants.SectorSize, LogHeaderSlot.SizeOf).ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), BeConstants.LogVersion + 1);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(LogHeaderSlot.CrcOffset), Crc32C.Compute(b.AsSpan(0, LogHeaderSlot.CrcOffset)));
        s.Overwrite(LogName, newest * BeConstants.SectorSize, b);
        var before = s.ReadAll(LogName);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains($"header slot {newest}: log format version {BeConstants.LogVersion + 1} is not supported", ex.Message);
        Assert.Contains("it holds the newest checkpoint: the log was last written by another build", ex.Message);
        Assert.Equal(before, s.ReadAll(LogName));
        // The older slot of the newer format is another matter: the newest checkpoint is this build's, and it opens.
        var t = await CrashedWithTenRecords();
        var tl = t.ReadAll(LogName);
        var older = tl.AsSpan((1 - newest) * BeConstants.SectorSize, LogHeaderSlot.SizeOf).ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(older.AsSpan(8), BeConstants.LogVersion + 1);
        BinaryPrimitives.WriteUInt32LittleEndian(older.AsSpan(LogHeaderSlot.CrcOffset), Crc32C.Compute(older.AsSpan(0, LogHeaderSlot.CrcOffset)));
        t.Overwrite(LogName, (1 - newest) * BeConstants.SectorSize, older);
        Assert.Equal(10, (await OpenAndRead(t)).Value);
    }

    // Records written by a newer build after the checkpoint this build reads (a downgrade after an upgrade, the header
    // slots still at this build's version): the first one read as the end of the log, in every mode, so every
    // transaction the newer build had reported persistent was silently dropped (and a writing open then built on top).
    [Theory]
    [InlineData(RecoveryMode.Strict, false)]
    [InlineData(RecoveryMode.TruncateAtCorruption, false)]
    [InlineData(RecoveryMode.Strict, true)]
    public async Task Records_of_a_newer_format_after_the_checkpoint_are_refused_naming_lsn_and_version(RecoveryMode mode, bool readOnly)
    {
        var s = await CrashedWithTenRecords();
        SetRecordVersion(s, 5, BeConstants.LogVersion + 1);
        var r6 = Records(s)[5];
        var before = s.ReadAll(LogName);
        var o = Engines.Sim(s);
        o.RecoveryMode = mode;
        o.ReadOnly = readOnly;
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => Engines.Open(o));
        Assert.EndsWith(LogName, ex.File);
        Assert.Equal(r6.Offset, ex.Offset);
        Assert.Contains($"record lsn 6 at offset 0x{r6.Offset:X} is of log format version {BeConstants.LogVersion + 1}, which this build " +
            $"does not read (it reads {BeConstants.MinLogVersion} to {BeConstants.LogVersion})", ex.Message);
        Assert.Equal(before, s.ReadAll(LogName));
    }

    /// <summary>
    /// Rewrites every record's groups in the layout of log format versions 1 and 2 (no <see cref="GroupFlags.Packed"/>:
    /// 16-byte region descriptors, each region's bytes padded to 8, 24-byte checksum descriptors), with their checksums. Records keep their
    /// length: the ten small records still fit their one sector.
    /// </summary>
    private static void UnpackGroups(SimStorage s)
    {
        var log = s.ReadAll(LogName);
        foreach (var r in Records(s))
        {
            var rec = log.AsSpan((int)r.Offset, (int)r.Length);
            var h = MemoryMarshal.Read<RecordHeader>(rec);
            var body = new List<byte>();
            uint crcs = ~0u;
            var groups = new LogRecord.Groups(rec, h.GroupCount);
            while (groups.MoveNext(out var gh, out var chunk))
            {
                Assert.Equal(GroupFlags.Packed, gh.Flags);
                var regions = new LogRecord.Regions(chunk, gh);
                var descs = new List<byte>();
                var data = new List<byte>();
                while (regions.MoveNext(out long offset, out var bytes))
                {
                    var d = new byte[RegionDescV1.SizeOf];
                    MemoryMarshal.Write(d, new RegionDescV1 { Offset = offset, Length = (uint)bytes.Length });
                    descs.AddRange(d);
                    data.AddRange(bytes.ToArray());
                    data.AddRange(new byte[LogFormat.Align8(bytes.Length) - bytes.Length]);
                }
                var payloads = chunk[regions.PayloadStart..(chunk.Length - (int)gh.MarkCount * PackedChecksumDesc.SizeOf)].ToArray();
                var g = new List<byte>(new byte[GroupHeader.SizeOf]);
                g.AddRange(descs);
                g.AddRange(data);
                g.AddRange(payloads);
                var marks = new LogRecord.Marks(chunk, gh);
                while (marks.MoveNext(out var m))
                {
                    var d = new byte[ChecksumDesc.SizeOf];
                    MemoryMarshal.Write(d, m);
                    g.AddRange(d);
                }
                var chunkV1 = g.ToArray();
                var ghV1 = gh;
                ghV1.Flags = 0;
                ghV1.Length = (uint)chunkV1.Length;
                MemoryMarshal.Write(chunkV1, ghV1);
                ghV1.Crc = Crc32C.Compute(chunkV1.AsSpan(0, 60), chunkV1.AsSpan(GroupHeader.SizeOf));
                MemoryMarshal.Write(chunkV1, ghV1);
                crcs = Crc32C.Append(crcs, BitConverter.GetBytes(ghV1.Crc));
                body.AddRange(chunkV1);
            }
            Assert.True(RecordHeader.SizeOf + body.Count <= r.Length, "an unpacked record no longer fits its sectors");
            var recV1 = new byte[r.Length];
            body.ToArray().CopyTo(recV1, RecordHeader.SizeOf);
            h.BodyLength = (uint)body.Count;
            h.GroupCrcs = ~crcs;
            MemoryMarshal.Write(recV1, h);
            h.HeaderCrc = LogRecord.HeaderCrc(recV1);
            MemoryMarshal.Write(recV1, h);
            s.Overwrite(LogName, r.Offset, recV1);
        }
    }

    [Fact]
    public async Task A_region_longer_than_one_descriptor_holds_is_cut_and_replayed_whole()
    {
        static DomainOptions Options(SimStorage s)
        {
            var o = Engines.Sim(s, segments: 1, segmentSize: 8 << 20, logSize: 32 << 20);
            o.SegmentMaxSize = 8 << 20;
            return o;
        }
        static byte Pattern(int i) => (byte)(i * 31 + (i >> 16));
        var storage = new SimStorage();
        const int length = 2 * RegionDesc.MaxLength + 1000; // three descriptors
        await using (var e = await Engines.Open(Options(storage)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(length));
                var span = tx.Capture(Off, length);
                for (int i = 0; i < length; i++) span[i] = Pattern(i);
                await tx.Close();
            });
            storage = storage.Clone();
        }
        var rec = Records(storage).Single();
        var image = storage.ReadAll(LogName).AsSpan((int)rec.Offset, (int)rec.Length);
        var groups = new LogRecord.Groups(image, MemoryMarshal.Read<RecordHeader>(image).GroupCount);
        Assert.True(groups.MoveNext(out var gh, out _));
        Assert.True(gh.RegionCount >= 3, $"{gh.RegionCount} region descriptors for a region of {length} bytes");

        await using (var e = await Engines.Open(Options(storage)))
        {
            Assert.Equal(1, e.Domain.Recovery.RecordsReplayed);
            var loc = e.Localities[0];
            int bad = await loc.RunAsync(() =>
            {
                var mem = loc.Segment!.Bytes(Off, length);
                for (int i = 0; i < length; i++)
                    if (mem[i] != Pattern(i)) return i;
                return -1;
            });
            Assert.Equal(-1, bad);
        }
    }

    /// <summary>Versions 1 and 2 wrote groups unpacked (version 1 also without checksum descriptors, none here).</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_log_left_by_an_older_format_version_with_unpacked_groups_is_replayed_and_then_written_as_the_current_version(uint version)
    {
        var s = await CrashedWithTenRecords();
        UnpackGroups(s);
        SetLogVersion(s, version);
        var (v, last, report) = await OpenAndRead(s);
        Assert.Equal(10, v);
        Assert.Equal(10, last);
        Assert.Equal(10, report.RecordsReplayed);
        Assert.Null(report.TornTail);
        var log = s.ReadAll(LogName);
        uint v0 = BinaryPrimitives.ReadUInt32LittleEndian(log.AsSpan(8)), v1 = BinaryPrimitives.ReadUInt32LittleEndian(log.AsSpan(BeConstants.SectorSize + 8));
        Assert.Equal(BeConstants.LogVersion, Math.Max(v0, v1)); // the checkpoints after recovery wrote the current version
    }

    [Fact]
    public async Task A_log_of_a_newer_format_version_is_refused_naming_the_versions()
    {
        var s = await CrashedWithTenRecords();
        SetLogVersion(s, BeConstants.LogVersion + 1);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains($"log format version {BeConstants.LogVersion + 1} is not supported", ex.Message);
        Assert.EndsWith(LogName, ex.File);
    }

    [Fact]
    public async Task Flipped_byte_in_the_middle_of_the_log_is_reported_as_corruption_with_file_offset_and_lsn()
    {
        var s = await CrashedWithTenRecords();
        var r5 = Records(s)[4];
        Flip(s, LogName, r5.Offset + RecordHeader.SizeOf + 70); // inside the group chunk
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("log corruption", ex.Message);
        Assert.Contains("lsn 5", ex.Message);
        Assert.Contains("lsn 6 follows", ex.Message);
        Assert.EndsWith(LogName, ex.File);
        Assert.Equal(r5.Offset, ex.Offset);
        Assert.Contains($"0x{r5.Offset:X}", ex.Message);

        // The refused open changed nothing: undo the flip and everything is there.
        Flip(s, LogName, r5.Offset + RecordHeader.SizeOf + 70);
        Assert.Equal((10L, 10L), (await OpenAndRead(s)) is var r ? (r.Value, r.LastTx) : default);
    }

    [Fact]
    public async Task Flipped_byte_in_a_middle_record_header_is_corruption_too()
    {
        var s = await CrashedWithTenRecords();
        var r3 = Records(s)[2];
        Flip(s, LogName, r3.Offset + 20); // lsn field
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("lsn 3", ex.Message);
        Assert.Equal(r3.Offset, ex.Offset);
    }

    [Fact]
    public async Task Truncate_mode_opens_at_the_prefix_before_the_damaged_record_and_says_so()
    {
        var s = await CrashedWithTenRecords();
        var r5 = Records(s)[4];
        Flip(s, LogName, r5.Offset + RecordHeader.SizeOf + 70);
        var (v, last, report) = await OpenAndRead(s, RecoveryMode.TruncateAtCorruption);
        Assert.Equal(4, v);
        Assert.Equal(4, last);
        Assert.NotNull(report.Truncated);
        Assert.Contains("lsn 5", report.Truncated);
        // And the discarded records never come back on a later open.
        var (v2, last2, report2) = await OpenAndRead(s);
        Assert.Equal((4L, 4L), (v2, last2));
        Assert.Equal(0, report2.RecordsReplayed);
    }

    /// <summary>
    /// A torn tail whose header survived, cut by one recovery, must not come back at the next: the writer of the
    /// recovered domain gives the same lsn to its first record and, when that record does not fit before the end
    /// of the lap, writes it at the next lap, leaving the torn one in place. Found by the double-crash test
    /// (seed 598654375 on a build of 2026-11-30): the second recovery took the stale header for a damaged
    /// record followed by a valid one and refused to open ("log corruption"; TruncateAtCorruption would have
    /// dropped the persisted record).
    /// </summary>
    [Fact]
    public async Task Torn_tail_cut_by_one_recovery_is_not_taken_for_corruption_by_the_next()
    {
        const long area = 64 << 10;
        const int bigLength = 2000; // a record of ~2.1 KiB: more than is left of the lap below
        var storage = new SimStorage();
        long tornAt = 0;
        await using (var e = await Engines.Open(Engines.Sim(storage, logSize: LogFormat.AreaOffset + area)))
        {
            var loc = e.Localities[0];
            // Small records (one sector each) until two sectors are left before the end of the lap.
            await loc.RunAsync(async () =>
            {
                for (long i = 1; area - e.Domain.Writer.Position % area != 2 * BeConstants.SectorSize; i++)
                {
                    using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                    tx.Capture<long>(Off) = i;
                    await tx.Close();
                }
                // One more, which the crash tears: its header survives, its body does not.
                tornAt = e.Domain.Writer.Position;
                using var last = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                last.Capture<long>(Off) = -1;
                await last.Close();
            });
            storage = storage.Clone();
        }
        Flip(storage, LogName, LogFormat.AreaOffset + tornAt % area + RecordHeader.SizeOf + 70);

        // First recovery: cuts the torn record. Then a record too long for the rest of the lap.
        long lastTx;
        await using (var e = await Engines.Open(Engines.Sim(storage, logSize: LogFormat.AreaOffset + area)))
        {
            Assert.NotNull(e.Domain.Recovery.TornTail);
            var loc = e.Localities[0];
            lastTx = await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(bigLength));
                tx.Capture(Off, bigLength).Fill(0x7E);
                await tx.Close();
                return loc.Segment!.LastTxId;
            });
            Assert.True(e.Domain.Writer.Position % area < tornAt % area, "the long record went to the next lap");
            storage = storage.Clone();
        }

        // Second recovery: the record written after the first is there, and nothing is called corruption.
        await using (var e = await Engines.Open(Engines.Sim(storage, logSize: LogFormat.AreaOffset + area)))
        {
            Assert.Null(e.Domain.Recovery.Truncated);
            var loc = e.Localities[0];
            Assert.Equal(lastTx, loc.Segment!.LastTxId);
            byte[] got = await loc.RunAsync(() => loc.Segment!.Bytes(Off, bigLength).ToArray());
            Assert.All(got, b => Assert.Equal(0x7E, b));
        }
    }

    [Fact]
    public async Task Flipped_byte_in_the_last_record_is_a_torn_tail_cut_off_with_a_warning()
    {
        var s = await CrashedWithTenRecords();
        var r10 = Records(s)[9];
        Flip(s, LogName, r10.Offset + RecordHeader.SizeOf + 70);
        var (v, last, report) = await OpenAndRead(s);
        Assert.Equal(9, v);
        Assert.Equal(9, last);
        Assert.Equal(9, report.RecordsReplayed);
        Assert.NotNull(report.TornTail);
        Assert.Contains("lsn 10", report.TornTail);
        Assert.Contains($"0x{r10.Offset:X}", report.TornTail);
        Assert.Contains("checksum mismatch", report.TornTail);
    }

    [Fact]
    public async Task Truncated_segment_is_refused_with_its_length()
    {
        var s = await CrashedWithTenRecords();
        using (var f = s.Open(Seg2, StorageOpenMode.OpenExisting)) f.SetLength(100_000);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("truncated", ex.Message);
        Assert.EndsWith(Seg2, ex.File);
        Assert.Equal(100_000, ex.Offset);

        using (var f = s.Open(Seg2, StorageOpenMode.OpenExisting)) f.SetLength(1000);
        ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("shorter than its 4096-byte header", ex.Message);
    }

    [Fact]
    public async Task Wrong_segment_magic_is_refused()
    {
        var s = await CrashedWithTenRecords();
        s.Overwrite(Seg1, 0, "NOTMOTR!"u8);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("not a Motr segment", ex.Message);
        Assert.EndsWith(Seg1, ex.File);
        Assert.Equal(0, ex.Offset);
    }

    [Fact]
    public async Task Unsupported_segment_version_is_refused_naming_both_versions()
    {
        var s = await CrashedWithTenRecords();
        var page = s.ReadAll(Seg1).AsSpan(0, 64).ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(8), 99);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(60), Crc32C.Compute(page.AsSpan(0, 60)));
        s.Overwrite(Seg1, 0, page);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("version 99 is not supported", ex.Message);
        Assert.Contains("reads version 1", ex.Message);
        Assert.Equal(8, ex.Offset);
    }

    [Fact]
    public async Task Flipped_byte_in_segment_header_fails_its_checksum()
    {
        var s = await CrashedWithTenRecords();
        Flip(s, Seg1, 41);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("checksum mismatch", ex.Message);
    }

    [Fact]
    public async Task Damaged_roots_block_is_found_at_open()
    {
        var s = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(s))) { }
        Flip(s, Seg1, 2000);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("roots", ex.Message);
        Assert.Equal(1536, ex.Offset);
    }

    [Fact]
    public async Task One_damaged_log_header_slot_is_survived_two_are_not()
    {
        var s = await CrashedWithTenRecords();
        Flip(s, LogName, 20);
        Assert.Equal(10, (await OpenAndRead(s)).Value); // slot A damaged: slot B's older checkpoint serves

        var both = s.Clone();
        Flip(both, LogName, 20);
        Flip(both, LogName, 512 + 20);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(both));
        Assert.Contains("header slot 0: checksum mismatch", ex.Message);
        Assert.EndsWith(LogName, ex.File);

        var zeroed = s.Clone();
        zeroed.Overwrite(LogName, 0, new byte[1024]);
        ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(zeroed));
        Assert.Contains("not a Motr log", ex.Message);
    }

    [Fact]
    public async Task Missing_segment_file_is_refused()
    {
        var s = await CrashedWithTenRecords();
        s.Delete(Seg2);
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(s));
        Assert.Contains("segment 2 of 2 is missing", ex.Message);
    }

    [Fact]
    public async Task Segment_of_another_domain_is_refused()
    {
        var a = await CrashedWithTenRecords();
        var b = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(b))) { }
        using (var f = a.Open(Seg2, StorageOpenMode.OpenExisting))
        {
            var other = b.ReadAll(Seg2);
            f.Write(0, other);
        }
        var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => OpenAndRead(a));
        Assert.Contains("belongs to domain", ex.Message);
    }
}
