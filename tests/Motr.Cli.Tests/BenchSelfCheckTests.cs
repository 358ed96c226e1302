using Motr.Bench;

namespace Motr.Cli.Tests;

/// <summary>
/// The benchmark harness's own correctness (not its speed: nothing here asserts a time): its checks fail a run
/// on a store with wrong contents, and a failed run exits non-zero. Runs the harness in process.
/// </summary>
public sealed class BenchSelfCheckTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("motr-bench-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Btree_self_check_catches_every_damaged_store()
    {
        // Every system on 3,000 keys with all the checks of a real run, then stores damaged on purpose (a key
        // dropped, a value changed, a key added): each damage must fail the checks that must see it (exit 1 if not).
        string json = Path.Combine(_dir, "self-check.json");
        int code = await BenchMain.RunAsync(["btree", "--self-check", "--dir", _dir, "--json", json]);
        Assert.Equal(0, code);
        string text = await File.ReadAllTextAsync(json);
        Assert.Contains("\"commit\"", text);
        Assert.Contains("\"settings\"", text);
        Assert.Empty(Directory.GetDirectories(_dir)); // the bench folder was removed
    }

    [Fact]
    public async Task A_failed_run_exits_1_and_writes_no_json()
    {
        string file = Path.Combine(_dir, "a-file");
        await File.WriteAllTextAsync(file, "");
        string json = Path.Combine(_dir, "out.json");
        int code = await BenchMain.RunAsync(["btree", "--keys", "10", "--dir", Path.Combine(file, "sub"), "--json", json]);
        Assert.Equal(1, code);
        Assert.False(File.Exists(json));
    }

    [Fact]
    public async Task A_bad_command_line_exits_2()
    {
        Assert.Equal(2, await BenchMain.RunAsync(["btree", "--no-such-option"]));
        Assert.Equal(2, await BenchMain.RunAsync(["tx", "--self-check"]));
    }
}
