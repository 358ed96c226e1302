using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Tx;

public class TransactionTests
{
    private const long Off = Engines.DataStart + 100;

    [Fact]
    public async Task Closed_tx_is_persisted_and_survives_reopen()
    {
        using var dir = new TempDir();
        await using (var e = await Engines.Open(Engines.Options(dir.Path)))
        {
            var loc = e.Localities[1];
            long id = await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(5));
                "hello"u8.CopyTo(tx.Capture(Off, 5));
                await tx.Close();
                Assert.Equal(TxState.Closed, tx.State);
                return tx.Id;
            });
            Assert.Equal(1, id);
        }
        await using (var e = await Engines.Open(Engines.Options(dir.Path)))
        {
            var loc = e.Localities[1];
            string s = await loc.RunAsync(() => System.Text.Encoding.ASCII.GetString(loc.Segment!.Bytes(Off, 5)));
            Assert.Equal("hello", s);
            Assert.Equal(1, loc.Segment!.LastTxId);
            Assert.Equal(0, e.Localities[0].Segment!.LastTxId);
        }
    }

    [Fact]
    public async Task Abort_restores_every_captured_byte_even_overlapping_captures()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using (var setup = await seg.BeginAsync(TxCredit.Region(300)))
            {
                var s = setup.Capture(Off, 300);
                for (int i = 0; i < 300; i++) s[i] = (byte)i;
                await setup.Close();
            }
            byte[] before = seg.Bytes(Off, 300).ToArray();
            using var tx = await seg.BeginAsync(new TxCredit(3, 500));
            tx.Capture(Off, 100).Fill(0xAA);
            tx.Capture(Off + 50, 200).Fill(0xBB);   // overlaps the first capture
            tx.Capture(Off + 10, 20).Fill(0xCC);    // inside both
            tx.Abort();
            Assert.Equal(before, seg.Bytes(Off, 300).ToArray());
            Assert.Equal(TxState.Aborted, tx.State);
            Assert.Throws<TxUsageException>(() => tx.Close());
        });
    }

    [Fact]
    public async Task Capture_beyond_credit_or_outside_segment_throws_clear_errors()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(new TxCredit(2, 100));
            tx.Capture(Off, 60);
            var bytes = Assert.Throws<TxUsageException>(() => tx.Capture(Off + 100, 41));
            Assert.Contains("exceeds its credit", bytes.Message);
            Assert.Contains("101 of 100 bytes", bytes.Message);
            tx.Capture(Off + 100, 40);
            var regions = Assert.Throws<TxUsageException>(() => tx.Capture(Off + 200, 1));
            Assert.Contains("3 of 2 regions", regions.Message);

            using var tx2 = await seg.BeginAsync(TxCredit.Region(64));
            var outside = Assert.Throws<TxUsageException>(() => tx2.Capture(seg.Size - 10, 64));
            Assert.Contains("outside", outside.Message);
            Assert.Throws<TxUsageException>(() => tx2.Capture(8, 8)); // the static header is never captured
            Assert.Throws<TxUsageException>(() => tx2.Capture(-64, 8));
            tx2.Capture(seg.Size - 64, 64); // last bytes are fine
            await tx2.Close();
        });
    }

    [Fact]
    public async Task Await_between_capture_and_close_aborts_the_tx_invariant_1()
    {
        using var dir = new TempDir();
        var warnings = new List<string>();
        var o = Engines.Options(dir.Path);
        o.OnWarning = w => { lock (warnings) warnings.Add(w); };
        await using var e = await Engines.Open(o);
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            var tx = await seg.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Off) = 42;
            await Task.Yield();  // the turn ends with the tx open: the engine must abort it
            Assert.Equal(TxState.Aborted, tx.State);
            Assert.Equal(0, seg.At<long>(Off));
            var ex = Assert.Throws<TxUsageException>(() => tx.Close());
            Assert.Contains("invariant 1", ex.Message);
            tx.Dispose();
        });
        Assert.Equal(1, e.Domain.InvariantViolations);
        Assert.Equal(1, loc.Segment!.TxStats.AbortedAtTurnEnd);
        lock (warnings) Assert.Contains(warnings, w => w.Contains("invariant 1"));
    }

    [Fact]
    public async Task A_tx_without_captures_may_wait_before_its_first_capture()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
            await Task.Yield(); // nothing captured yet: the tx only holds log space
            tx.Capture<long>(Off) = 7;
            await tx.Close();
        });
        Assert.Equal(0, e.Domain.InvariantViolations);
    }

    [Fact]
    public async Task Persisted_continuations_run_on_the_owning_locality()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        foreach (var loc in e.Localities)
        {
            bool onOwner = await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Off) = 1;
                await tx.Close();
                return Locality.Current == loc;
            });
            Assert.True(onOwner);
        }
    }

    [Fact]
    public async Task Overlapping_captures_of_a_group_are_logged_once()
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path);
        o.GroupBoundTxs = 2000; // all 1000 in one group
        await using var e = await Engines.Open(o);
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            TxPersistence last = default;
            for (int i = 0; i < 1000; i++)   // one turn: all in one group
            {
                using var tx = await seg.BeginAsync(TxCredit.Region(64));
                tx.Capture(Off, 64).Fill((byte)i);
                last = tx.Close();
            }
            await last;
        });
        var st = loc.Segment!.TxStats;
        Assert.Equal(1000, st.Closed);
        Assert.Equal(1000, st.RegionsCaptured);
        Assert.Equal(1, st.GroupsSealed);
        Assert.Equal(2, st.RegionsLogged); // the hot region once, plus the segment's geometry block
    }

    [Fact]
    public async Task Tx_ids_are_consecutive_over_closed_txs_only()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        var ids = await loc.RunAsync(async () =>
        {
            var list = new List<long>();
            for (int i = 0; i < 10; i++)
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Off) = i;
                if (i % 3 == 0) { tx.Abort(); continue; }
                await tx.Close();
                list.Add(tx.Id);
            }
            return list;
        });
        Assert.Equal(new long[] { 1, 2, 3, 4, 5, 6 }, ids);
        Assert.Equal(6, loc.Segment!.LastTxId);
    }

    [Fact]
    public async Task Transactions_need_an_owner_thread()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(async () => await e.Localities[0].Segment!.BeginAsync(TxCredit.Region(8)));
        Assert.Contains("owner thread", ex.Message);
    }

    [Fact]
    public async Task Many_writers_on_two_localities_all_persist_and_recover()
    {
        using var dir = new TempDir();
        const int Writers = 64, Each = 200;
        await using (var e = await Engines.Open(Engines.Options(dir.Path)))
        {
            await Task.WhenAll(e.Localities.Select(loc => loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                async Task Writer(int w)
                {
                    for (int i = 0; i < Each; i++)
                    {
                        using var tx = await seg.BeginAsync(TxCredit.Region(8) * 2);
                        tx.Capture<long>(Off + w * 8) = i + 1;            // this writer's slot
                        tx.Capture<long>(Off + 4096) += 1;                // a shared hot counter
                        await tx.Close();
                    }
                }
                await Task.WhenAll(Enumerable.Range(0, Writers).Select(Writer));
            })));
        }
        await using (var e = await Engines.Open(Engines.Options(dir.Path)))
        {
            foreach (var loc in e.Localities)
            {
                await loc.RunAsync(() =>
                {
                    var seg = loc.Segment!;
                    Assert.Equal(Writers * Each, seg.At<long>(Off + 4096));
                    for (int w = 0; w < Writers; w++) Assert.Equal(Each, seg.At<long>(Off + w * 8));
                    Assert.Equal(Writers * Each, seg.LastTxId);
                });
            }
        }
    }

    [Fact]
    public async Task Grow_is_transactional_and_persists()
    {
        using var dir = new TempDir();
        await using (var e = await Engines.Open(Engines.Options(dir.Path, segmentSize: 64 << 10)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                Assert.Equal(64 << 10, seg.Size);
                using (var tx = await seg.BeginAsync(Segments.Segment.GrowCredit + TxCredit.Region(8)))
                {
                    Assert.True(seg.Grow(tx, 100_000));
                    Assert.Equal(102_400, seg.Size);
                    tx.Capture<long>(100_000) = 5;
                    tx.Abort();
                }
                Assert.Equal(64 << 10, seg.Size);
                using (var tx = await seg.BeginAsync(Segments.Segment.GrowCredit + TxCredit.Region(8)))
                {
                    Assert.False(seg.Grow(tx, seg.MaxSize + 1));
                    Assert.True(seg.Grow(tx, 200_000));
                    tx.Capture<long>(200_000 - 8) = 99;
                    await tx.Close();
                }
            });
        }
        Assert.Equal(200_704, new FileInfo(Path.Combine(dir.Path, "seg-0001.motr")).Length);
        await using (var e = await Engines.Open(Engines.Options(dir.Path, segmentSize: 64 << 10)))
        {
            var loc = e.Localities[0];
            Assert.Equal(200_704, loc.Segment!.Size);
            Assert.Equal(99, await loc.RunAsync(() => loc.Segment!.At<long>(200_000 - 8)));
        }
    }

    [Fact]
    public async Task Named_roots_persist_and_report_clear_errors()
    {
        using var dir = new TempDir();
        await using (var e = await Engines.Open(Engines.Options(dir.Path)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                using var tx = await seg.BeginAsync(Segments.Segment.RootCredit * 3);
                seg.SetRoot(tx, "catalogue", 8192);
                seg.SetRoot(tx, "extmap", 12288);
                seg.SetRoot(tx, "catalogue", 16384); // replace
                await tx.Close();
                using var tx2 = await seg.BeginAsync(Segments.Segment.RootCredit);
                Assert.Throws<BeException>(() => seg.SetRoot(tx2, new string('x', 49), 1));
                Assert.True(seg.RemoveRoot(tx2, "extmap"));
                await tx2.Close();
            });
        }
        await using (var e = await Engines.Open(Engines.Options(dir.Path)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(() =>
            {
                var seg = loc.Segment!;
                Assert.True(seg.TryGetRoot("catalogue", out long off));
                Assert.Equal(16384, off);
                Assert.False(seg.TryGetRoot("extmap", out _));
                Assert.Single(seg.Roots());
            });
        }
    }

    [Fact]
    public async Task Reopening_with_more_localities_adds_empty_segments()
    {
        using var dir = new TempDir();
        await using (var e = await Engines.Open(Engines.Options(dir.Path, segments: 1))) Assert.Single(e.Localities);
        await using (var e = await Engines.Open(Engines.Options(dir.Path, segments: 3))) Assert.Equal(3, e.Localities.Count);
        await using (var e = await Engines.Open(Engines.Options(dir.Path, segments: 1))) Assert.Equal(3, e.Localities.Count);
    }
}
