using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Tx;

/// <summary>DomainOptions.VerifyCaptures finds bytes changed outside any capture, the bug class that breaks recovery and checksums.</summary>
public class CaptureVerificationTests
{
    private const long Off = Engines.DataStart + 512;

    private static DomainOptions Verified(string dir)
    {
        var o = Engines.Options(dir, segments: 1);
        o.VerifyCaptures = true;
        return o;
    }

    [Fact]
    public async Task A_write_without_capture_is_reported_with_its_range()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Verified(dir.Path));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using var tx = await seg.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Off) = 1;
            seg.At<long>(Off + 1000) = 2;   // not captured
            await tx.Close();
        });
        var v = Assert.Single(e.Domain.CaptureViolations);
        Assert.Contains($"[0x{Off + 1000:X}, 0x{Off + 1001:X})", v);
    }

    [Fact]
    public async Task A_write_before_its_capture_then_abort_is_reported()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Verified(dir.Path));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            using (var tx = await seg.BeginAsync(TxCredit.Region(8)))
            {
                seg.At<long>(Off) = 5;    // written first...
                tx.Capture(Off, 8);       // ...captured after: the "old" bytes kept are the new ones
                tx.Abort();               // so the abort cannot undo the write
            }
            using var tx2 = await seg.BeginAsync(TxCredit.Region(8));
            tx2.Capture<long>(Off + 64) = 1;
            await tx2.Close();
        });
        Assert.Contains(e.Domain.CaptureViolations, v => v.Contains($"0x{Off:X}"));
    }

    [Fact]
    public async Task Correct_transactions_report_nothing()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Verified(dir.Path));
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            for (int i = 0; i < 100; i++)
            {
                using var tx = await seg.BeginAsync(TxCredit.Region(8) * 2);
                tx.Capture<long>(Off + 8 * (i % 7)) = i;
                tx.Capture<long>(Off + 4096) += 1;
                if (i % 3 == 0) tx.Abort(); else await tx.Close();
            }
        });
        Assert.Empty(e.Domain.CaptureViolations);
    }
}
