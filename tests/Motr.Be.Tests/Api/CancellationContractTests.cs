using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Api;

/// <summary>A cancellation token given to a public method is honoured: already cancelled, the call changes nothing.</summary>
public class CancellationContractTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task BeginAsync_with_a_cancelled_token_opens_no_transaction_even_with_space_at_hand()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        await loc.RunAsync(async () =>
        {
            using var cts = new CancellationTokenSource();
            cts.Cancel();
            // Before: the fast path (log space available) ignored the token and returned an open transaction.
            var begin = seg.BeginAsync(TxCredit.Region(8), cts.Token);
            Assert.True(begin.IsCanceled);
            var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await begin);
            Assert.Equal(cts.Token, ex.CancellationToken);
            // Misuse is still reported before cancellation.
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await seg.BeginAsync(new TxCredit(-1, 0), cts.Token));
            using var tx = await seg.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Engines.DataStart) = 1;
            await tx.Close();
        }).WaitAsync(T);
        Assert.Equal(0, seg.TxStats.Aborted);
        Assert.Equal(1, seg.TxStats.Closed);
    }
}
