using System.Runtime.InteropServices;
using Motr.Be.Log;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

using static Motr.Be.Tests.Recovery.LogImages;

namespace Motr.Be.Tests.Recovery;

/// <summary>
/// <see cref="RecoveryMode.TruncateAtCorruption"/> past a damaged record with intact ones after it (record lsn 5 of 10):
/// the truncation is one checkpoint, a crash at any point of it leaves either the log as it was or the truncated
/// domain, and the log goes on past the discarded records, which never return.
/// </summary>
public class TruncationTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);
    private const long Off = Engines.DataStart;

    /// <summary>Ten records, each setting the value to its number; record 5's body damaged.</summary>
    private static async Task<SimStorage> DamagedAtFive()
    {
        var s = await CrashedWithTenRecords();
        var r5 = Records(s)[4];
        var b = s.ReadAll(BeConstants.LogFileName);
        long at = r5.Offset + RecordHeader.SizeOf + 70; // inside the group chunk
        s.Overwrite(BeConstants.LogFileName, at, [(byte)(b[at] ^ 0x5A)]);
        return s;
    }

    private static DomainOptions Options(SimStorage s, RecoveryMode mode)
    {
        var o = Engines.Sim(s);
        o.RecoveryMode = mode;
        return o;
    }

    /// <summary>The checkpoint lsn of the newest intact header slot.</summary>
    private static ulong CheckpointLsn(SimStorage s)
    {
        var log = s.ReadAll(BeConstants.LogFileName);
        ulong seq = 0, lsn = 0;
        for (int slot = 0; slot < 2; slot++)
        {
            var bytes = log.AsSpan(slot * BeConstants.SectorSize, LogHeaderSlot.SizeOf);
            var h = MemoryMarshal.Read<LogHeaderSlot>(bytes);
            if (h.Crc != Crc32C.Compute(bytes[..LogHeaderSlot.CrcOffset]) || h.SlotSeq < seq) continue;
            seq = h.SlotSeq;
            lsn = h.CheckpointLsn;
        }
        return lsn;
    }

    // The truncation's checkpoint went into one header slot; the other kept the checkpoint from before it until the
    // next checkpoint. The log goes on past the discarded records (lsn 11 at record 5's place), so with the newest slot
    // then lost (the damage the other slot is there to survive), recovery from the older one met lsn 11 where it
    // expected 5, and refused in every mode: "the log has wrapped over that checkpoint". (The wipe this replaced left
    // lsn 5 there, and the older slot recovered everything.) The truncation's checkpoint now goes into both slots.
    [Theory]
    [InlineData(RecoveryMode.Strict)]
    [InlineData(RecoveryMode.TruncateAtCorruption)]
    public async Task After_a_truncation_the_loss_of_the_newest_header_slot_still_opens_with_every_later_record(RecoveryMode mode)
    {
        var s = await DamagedAtFive();
        SimStorage crashed;
        await using (var e = await Engines.Open(Options(s, RecoveryMode.TruncateAtCorruption)).WaitAsync(T))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Off) = 101;
                await tx.Close();
            }).WaitAsync(T);
            crashed = s.Clone();
        }
        var log = crashed.ReadAll(BeConstants.LogFileName);
        int newest = BitConverter.ToUInt64(log, 48) >= BitConverter.ToUInt64(log, BeConstants.SectorSize + 48) ? 0 : 1;
        long at = newest * BeConstants.SectorSize + 60;
        crashed.Overwrite(BeConstants.LogFileName, at, [(byte)(log[at] ^ 0xEE)]);
        Assert.Equal(101L, await ValueAfterOpen(crashed, mode));
    }

    private static async Task<long> ValueAfterOpen(SimStorage s, RecoveryMode mode)
    {
        await using var e = await Engines.Open(Options(s, mode)).WaitAsync(T);
        var loc = e.Localities[0];
        return await loc.RunAsync(() => loc.Segment!.At<long>(Off));
    }

    // The truncation zeroed the whole log area after its checkpoint: a crash during that wipe (a MiB write at a time,
    // over the whole log) left a log whose checkpoint was already at the truncation point and whose discarded records
    // were still partly there, so a strict open refused it again. Now the log goes on at an lsn past every record in
    // it, written by the checkpoint itself: nothing is wiped, and once that checkpoint is durable the domain opens.
    [Fact]
    public async Task A_truncation_cut_by_a_crash_at_any_operation_leaves_the_log_as_it_was_or_truncated_and_opening_strict()
    {
        var image = await DamagedAtFive();
        ulong before = CheckpointLsn(image);
        Assert.Equal(4L, await ValueAfterOpen(image.Clone(), RecoveryMode.TruncateAtCorruption));

        var run = image.Clone();
        await (await Engines.Open(Options(run, RecoveryMode.TruncateAtCorruption)).WaitAsync(T)).DisposeAsync();
        var variants = new[] { CrashVariant.DropUnsynced, CrashVariant.KeepUnsynced, CrashVariant.TornLast };
        int refused = 0, opened = 0;
        for (int k = 0; k <= run.OpCount; k++)
        {
            var crashed = run.CrashImage(k, variants[k % variants.Length], k);
            bool truncationDurable = CheckpointLsn(crashed) != before;
            try
            {
                Assert.Equal(4L, await ValueAfterOpen(crashed.Clone(), RecoveryMode.Strict));
                opened++;
            }
            catch (BeCorruptionException e) when (e.TruncationOpens)
            {
                Assert.False(truncationDurable, $"crash after {k} of {run.OpCount} operations: the truncation's checkpoint is durable, yet a strict open refused: {e.Message}");
                refused++;
                Assert.Equal(4L, await ValueAfterOpen(crashed, RecoveryMode.TruncateAtCorruption)); // truncating again gives the same domain
            }
        }
        Assert.True(refused > 0 && opened > 0, $"{refused} refused, {opened} opened");
    }

    [Fact]
    public async Task After_a_truncation_the_log_goes_on_past_the_discarded_records_which_never_return()
    {
        var s = await DamagedAtFive();
        var discarded = Records(s).Where(r => r.Lsn > 5).ToList();
        Assert.Equal(5, discarded.Count);
        SimStorage crashed, tornFirst;
        var o = Options(s, RecoveryMode.TruncateAtCorruption);
        await using (var e = await Engines.Open(o).WaitAsync(T))
        {
            Assert.Equal(11UL, e.Domain.Recovery.NextLsn); // past lsn 10, the greatest left in the log
            var loc = e.Localities[0];
            int firstWrite = s.OpCount;
            await loc.RunAsync(async () =>
            {
                for (int i = 101; i <= 103; i++)
                {
                    using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                    tx.Capture<long>(Off) = i;
                    await tx.Close(); // one record each, at the place of the discarded ones
                }
            }).WaitAsync(T);
            crashed = s.Clone();
            // The first new record torn: cut as a torn tail, with no discarded record taken for one after it.
            int k = firstWrite;
            while (s.GetOp(k) is var op && !(op.Kind == SimOpKind.Write && op.File == BeConstants.LogFileName && op.Offset >= LogFormat.AreaOffset)) k++;
            tornFirst = s.CrashImage(k + 1, CrashVariant.TornLast, 3);
        }
        // The new records sit where discarded ones were, and some discarded ones are still in the log after them.
        var now = Records(crashed);
        Assert.Equal([11UL, 12UL, 13UL], now.Where(r => r.Lsn > 10).Select(r => r.Lsn).ToArray());
        Assert.Contains(now, r => r.Lsn is > 5 and <= 10);

        var strict = Options(crashed, RecoveryMode.Strict);
        await using (var e = await Engines.Open(strict).WaitAsync(T))
        {
            var loc = e.Localities[0];
            Assert.Equal(103L, await loc.RunAsync(() => loc.Segment!.At<long>(Off)));
            Assert.Equal(3, e.Domain.Recovery.RecordsReplayed);
            Assert.Null(e.Domain.Recovery.TornTail);
            Assert.Null(e.Domain.Recovery.Truncated);
        }
        await using (var e = await Engines.Open(Options(tornFirst, RecoveryMode.Strict)).WaitAsync(T))
        {
            var loc = e.Localities[0];
            Assert.Equal(4L, await loc.RunAsync(() => loc.Segment!.At<long>(Off)));
            Assert.Null(e.Domain.Recovery.Truncated);
        }
    }

    // The lsns go on past the greatest one in the area; a crafted header carrying the greatest lsn there is leaves none.
    [Fact]
    public async Task A_header_with_the_greatest_possible_lsn_in_the_area_refuses_the_truncation_naming_it()
    {
        var s = await DamagedAtFive();
        var r10 = Records(s)[9];
        var log = s.ReadAll(BeConstants.LogFileName);
        var hdr = log.AsSpan((int)r10.Offset, RecordHeader.SizeOf).ToArray();
        var h = MemoryMarshal.Read<RecordHeader>(hdr);
        long at = r10.Offset + 64 * BeConstants.SectorSize; // an empty sector well after the last record
        h.Lsn = ulong.MaxValue;
        h.Position = at - LogFormat.AreaOffset;
        MemoryMarshal.Write(hdr, h);
        h.HeaderCrc = LogRecord.HeaderCrc(hdr);
        MemoryMarshal.Write(hdr, h);
        s.Overwrite(BeConstants.LogFileName, at, hdr);
        var e = await Assert.ThrowsAsync<BeCorruptionException>(() => ValueAfterOpen(s, RecoveryMode.TruncateAtCorruption));
        Assert.Equal(at, e.Offset);
        Assert.Contains($"record header at offset 0x{at:X} carries lsn {ulong.MaxValue}, the greatest there is", e.Message);
        // Refused before its checkpoint: the log is as it was (a strict open still refuses it the same way).
        var again = await Assert.ThrowsAsync<BeCorruptionException>(() => ValueAfterOpen(s, RecoveryMode.Strict));
        Assert.True(again.TruncationOpens);
    }
}
