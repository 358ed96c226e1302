using Motr.Be.Alloc;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Alloc;

/// <summary>A one-segment engine in a fresh temp folder, with helpers that run allocator code on its locality.</summary>
internal sealed class AllocHost : IAsyncDisposable
{
    public const long SegmentSize = 1 << 20;
    public const long SegmentMaxSize = 4 << 20;

    private readonly long _size;
    private readonly long _maxSize;

    private AllocHost(string dir, long size, long maxSize)
    {
        Dir = dir;
        _size = size;
        _maxSize = maxSize;
    }

    public string Dir { get; }
    public Engine Engine { get; private set; } = null!;
    public Locality Loc => Engine.Localities[0];
    public int Reopens { get; private set; }

    public static async Task<AllocHost> OpenAsync(long size = SegmentSize, long maxSize = SegmentMaxSize)
    {
        string dir = Path.Combine(Path.GetTempPath(), "motr-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        var host = new AllocHost(dir, size, maxSize);
        await host.StartAsync();
        return host;
    }

    private async Task StartAsync() =>
        Engine = await Engine.OpenAsync(new DomainOptions
        {
            Path = Dir,
            Segments = 1,
            SegmentSize = _size,
            SegmentMaxSize = _maxSize,
            LogSize = 8 << 20,
        });

    /// <summary>Closes the engine and opens it again on the same folder: recovery runs.</summary>
    public async Task ReopenAsync()
    {
        await Engine.DisposeAsync();
        await StartAsync();
        Reopens++;
    }

    /// <summary>Runs <paramref name="f"/> on the locality (one turn).</summary>
    public Task<T> Run<T>(Func<Segment, Allocator, T> f) =>
        Loc.RunAsync<T>(() => Task.FromResult(f(Loc.Segment!, Loc.Segment!.Allocator)));

    /// <summary>Runs <paramref name="f"/> on the locality (one turn).</summary>
    public Task Run(Action<Segment, Allocator> f) =>
        Loc.RunAsync(() => { f(Loc.Segment!, Loc.Segment!.Allocator); return Task.CompletedTask; });

    /// <summary>Runs an async body on the locality.</summary>
    public Task RunAsync(Func<Segment, Allocator, Task> f) => Loc.RunAsync(() => f(Loc.Segment!, Loc.Segment!.Allocator));

    /// <summary>Opens a tx with <paramref name="credit"/>, runs <paramref name="body"/>, then closes it (or aborts it).</summary>
    public Task<T> InTx<T>(TxCredit credit, Func<Transaction, Allocator, T> body, bool abort = false) =>
        Loc.RunAsync<T>(async () =>
        {
            var seg = Loc.Segment!;
            using var tx = await seg.BeginAsync(credit);
            T result = body(tx, seg.Allocator);
            if (abort) tx.Abort();
            else _ = tx.Close();
            return result;
        });

    public async ValueTask DisposeAsync()
    {
        await Engine.DisposeAsync();
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException) { }
    }
}
