"""N WebSocket clients on one job's stream; counts messages until the job's status event."""
import asyncio, json, sys
import websockets

async def client(url, counts, i):
    async with websockets.connect(url, max_queue=None) as ws:
        async for msg in ws:
            counts[i] += 1
            d = json.loads(msg)
            if d.get("type") == "status" and d.get("data", {}).get("status") in ("succeeded", "failed", "cancelled"):
                return

async def main(url, n):
    counts = [0] * n
    await asyncio.gather(*(client(url, counts, i) for i in range(n)))
    print(json.dumps({"clients": n, "min_messages": min(counts), "max_messages": max(counts)}))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
