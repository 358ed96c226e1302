using Motr.Be.Segments;
using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// The transaction and segment-roots public contract at its edges: a transaction of another segment, short of credit
/// or of an earlier life, savepoints rolled back past, the engine's own header fields, bad sizes and names, the owner
/// thread. Each misuse is refused with a clear error, nothing persistent is damaged and the transaction is left as it was.
/// </summary>
public sealed class TxSegmentContractTests
{
    private const long Off = Engines.DataStart + 256;

    /// <summary>Runs <paramref name="op"/> on a thread of its own and waits for it; returns what it threw.</summary>
    private static Exception? OffThread(Action op)
    {
        Exception? thrown = null;
        var t = new Thread(() => thrown = Record.Exception(op));
        t.Start();
        t.Join();
        return thrown;
    }

    [Fact]
    public async Task SetRoot_and_RemoveRoot_short_of_the_checksum_credit_capture_nothing()
    {
        var storage = new SimStorage();
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
        {
            var loc = e.Localities[0];
            var seg = loc.Segment!;
            await loc.RunAsync(async () =>
            {
                using (var tx = await seg.BeginAsync(Segment.RootCredit))
                {
                    seg.SetRoot(tx, "kept", 4096);
                    await tx.Close();
                }
                // Enough for the slot but not for the roots block's checksum. Before: the slot was captured and changed,
                // then the checksum refused; a caller that went on to close left the block with a stale CRC, and the
                // segment no longer opened.
                using var tx2 = await seg.BeginAsync(TxCredit.Region(64));
                Assert.Throws<TxUsageException>(() => seg.SetRoot(tx2, "new", 8192));
                Assert.Throws<TxUsageException>(() => seg.RemoveRoot(tx2, "kept"));
                Assert.Equal(TxCredit.Zero, tx2.Used);
                await tx2.Close();
            });
            storage = storage.Clone();
        }
        await using (var e = await Engines.Open(Engines.Sim(storage, segments: 1)))
        {
            var roots = await e.Localities[0].RunAsync(() => e.Localities[0].Segment!.Roots());
            Assert.Equal([new KeyValuePair<string, long>("kept", 4096)], roots);
        }
    }

    [Fact]
    public async Task Roots_are_refused_off_the_owner_thread_and_after_the_engine_closed()
    {
        var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var seg = e.Localities[0].Segment!;
        // Before: read the segment's memory from any thread, racing the owner's changes.
        Assert.IsType<InvalidOperationException>(OffThread(() => seg.TryGetRoot("a", out _)));
        Assert.IsType<InvalidOperationException>(OffThread(() => seg.Roots()));
        await e.DisposeAsync();
        Assert.IsType<ObjectDisposedException>(OffThread(() => seg.TryGetRoot("a", out _)));
        Assert.IsType<ObjectDisposedException>(OffThread(() => seg.Roots()));
    }

    [Fact]
    public async Task Root_names_that_are_null_or_not_valid_UTF16_are_refused()
    {
        await using var e = await Engines.Open(Engines.Sim(new SimStorage(), segments: 1));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(Segment.RootCredit * 2);
            Assert.Equal("name", Assert.Throws<ArgumentNullException>(() => seg.SetRoot(tx, null!, 1)).ParamName);
            Assert.Equal("name", Assert.Throws<ArgumentNullException>(() => seg.TryGetRoot(null!, out _)).ParamName);
            Assert.Equal("name", Assert.Throws<ArgumentNullException>(() => seg.RemoveRoot(tx, null!)).ParamName);
            // Before: a lone surrogate was stored as U+FFFD, so "\uD800" and "\uDC00" named the same root.
            Assert.Throws<BeException>(() => seg.SetRoot(tx, "\uD800", 1));
            Assert.Throws<BeException>(() => seg.TryGetRoot("x\uDC00", out _));
            Assert.Equal(TxCredit.Zero, tx.Used);
            seg.SetRoot(tx, "é" + new string('x', 46), 2);   // 48 UTF-8 bytes: the longest
            Assert.Throws<BeException>(() => seg.SetRoot(tx, "é" + new string('x', 47), 3));
            Assert.True(seg.TryGetRoot("é" + new string('x', 46), out long v) && v == 2);
            await tx.Close();
        });
    }
}
