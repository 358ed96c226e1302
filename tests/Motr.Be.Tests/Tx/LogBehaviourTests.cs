using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Tx;

public class LogBehaviourTests
{
    private const long Off = Engines.DataStart;

    [Fact]
    public async Task Payloads_are_handed_back_by_recovery_in_log_order()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage)))
        {
            var loc = e.Localities[1];
            await loc.RunAsync(async () =>
            {
                for (int i = 0; i < 20; i++)
                {
                    using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8) + TxCredit.Payload(16));
                    tx.Capture<long>(Off) = i;
                    if (i % 2 == 0) tx.SetPayload(System.Text.Encoding.ASCII.GetBytes($"redo {i}"));
                    await tx.Close();
                }
            });
            storage = storage.Clone(); // the disk as it is now: a crash, before any checkpoint
        }
        var payloads = new List<RecoveredPayload>();
        var o = Engines.Sim(storage);
        o.OnRecoveredPayload = p => payloads.Add(p);
        await using (var e = await Engines.Open(o))
        {
            Assert.True(e.Domain.Recovery.RecordsReplayed > 0);
            Assert.Equal(20, e.Localities[1].Segment!.LastTxId);
        }
        Assert.Equal(10, payloads.Count);
        for (int k = 0; k < 10; k++)
        {
            Assert.Equal(2ul, payloads[k].SegmentId);
            Assert.Equal(2 * k + 1, payloads[k].TxId);
            Assert.Equal($"redo {2 * k}", System.Text.Encoding.ASCII.GetString(payloads[k].Payload.Span));
        }
    }

    [Fact]
    public async Task A_full_log_makes_txs_wait_for_placing_never_fail()
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, logSize: 132 << 10); // 128 KiB of records
        o.CheckpointInterval = TimeSpan.FromHours(1);              // only space pressure triggers checkpoints
        await using var e = await Engines.Open(o);
        var loc = e.Localities[0];
        const int Writers = 16, Each = 60;
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            async Task Writer(int w)
            {
                for (int i = 0; i < Each; i++)
                {
                    using var tx = await seg.BeginAsync(TxCredit.Region(4000));
                    tx.Capture(Off + (w % 4) * 4000, 4000).Fill((byte)i);
                    await tx.Close();
                }
            }
            await Task.WhenAll(Enumerable.Range(0, Writers).Select(Writer));
        });
        var st = loc.Segment!.TxStats;
        Assert.Equal(Writers * Each, st.Closed);
        Assert.True(st.SpaceWaits > 0, "the log never filled: the test does not test waiting");
        var placing = e.Domain.Stats.Placing;
        Assert.True(placing.Checkpoints > 1);
        // Each checkpoint wrote out the pages the writers changed (4000-byte captures span two pages at least).
        Assert.True(placing.WrittenBack >= placing.Checkpoints * 4096, $"{placing.WrittenBack} bytes written back by {placing.Checkpoints} checkpoints");
        Assert.True(placing.CheckpointTime > TimeSpan.Zero);
        Assert.True(e.Domain.Stats.Log.Bytes > 4 * (128 << 10), "the log did not wrap");
    }

    /// <summary>
    /// A credit so large that its log reservation does not fit a long (a caller's sum gone wild, bytes near 2^62 or
    /// beyond) is refused at open like any credit larger than a record — not wrapped to a negative reservation that
    /// passes the check and is taken from the log as space given back. TryBegin too, and the log still serves.
    /// </summary>
    [Theory]
    [InlineData(1, 1L << 62)]
    [InlineData(1, long.MaxValue)]
    [InlineData(int.MaxValue, 1L << 61)]
    public async Task A_credit_whose_reservation_overflows_is_refused_at_open(int regions, long bytes)
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path, logSize: 1 << 20));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            var credit = new TxCredit(regions, bytes);
            var ex = await Assert.ThrowsAsync<TxUsageException>(async () => { using var tx = await seg.BeginAsync(credit); });
            Assert.Contains("more than one record may hold", ex.Message);
            Assert.Throws<TxUsageException>(() => seg.TryBegin(credit, out _));
            using (var tx = await seg.BeginAsync(TxCredit.Region(64)))
            {
                tx.Capture(8192, 64).Fill(7);
                await tx.Close();
            }
        });
    }

    [Fact]
    public async Task A_credit_larger_than_a_record_is_refused_at_open()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path, logSize: 132 << 10));
        var loc = e.Localities[0];
        var ex = await Assert.ThrowsAsync<TxUsageException>(() => loc.RunAsync(async () =>
        {
            using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(1 << 20));
        }));
        Assert.Contains("more than one record may hold", ex.Message);
    }

    [Fact]
    public async Task Log_failure_fails_unpersisted_txs_and_keeps_what_was_persisted()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Off) = 111;
                await tx.Close();
            });
            storage.FailAfter(0, SimFault.WriteAndFlush);
            var ex = await Assert.ThrowsAsync<LogFailedException>(() => loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Off) = 222;
                await tx.Close();
            }));
            Assert.Contains("injected fault", ex.ToString());
            Assert.NotNull(e.Domain.Failure);
            await Assert.ThrowsAsync<LogFailedException>(() => loc.RunAsync(async () => { using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8)); }));
            storage.ClearFault();
            storage = storage.CrashImage(storage.OpCount, CrashVariant.DropUnsynced, 1);
        }
        await using (var e = await Engines.Open(Engines.Sim(storage)))
        {
            var loc = e.Localities[0];
            Assert.Equal(111, await loc.RunAsync(() => loc.Segment!.At<long>(Off)));
            Assert.Equal(1, loc.Segment!.LastTxId);
        }
    }

    [Fact]
    public async Task A_tx_is_reported_persistent_only_once_its_record_is_synced_invariant_2()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage)))
        {
            await Task.WhenAll(e.Localities.Select(loc => loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                async Task Writer(int w)
                {
                    for (int i = 0; i < 20; i++)
                    {
                        using var tx = await seg.BeginAsync(TxCredit.Region(8));
                        tx.Capture<long>(Off + 8 * w) = i + 1;
                        await tx.Close();
                        storage.Mark((seg.Id, tx.Id));
                    }
                }
                await Task.WhenAll(Enumerable.Range(0, 8).Select(Writer));
            })));
        }
        // At every marker, a crash that drops all unsynced writes still recovers the marked tx.
        var persisted = new Dictionary<ulong, long> { [1] = 0, [2] = 0 };
        int checkedMarkers = 0;
        for (int k = 0; k < storage.OpCount; k++)
        {
            var op = storage.GetOp(k);
            if (op.Kind != SimOpKind.Marker) continue;
            var (seg, id) = ((ulong, long))op.Tag!;
            persisted[seg] = Math.Max(persisted[seg], id);
            if (checkedMarkers++ % 16 != 0) continue;
            var image = storage.CrashImage(k + 1, CrashVariant.DropUnsynced, 0);
            var d = Domain.Open(Engines.Sim(image));
            try
            {
                foreach (var s in d.Segments) Assert.True(s.LastTxId >= persisted[s.Id], $"segment {s.Id}: recovered {s.LastTxId} < persisted {persisted[s.Id]} at op {k}");
            }
            finally { await d.DisposeAsync(); }
        }
        Assert.True(checkedMarkers >= 300);
    }
}
