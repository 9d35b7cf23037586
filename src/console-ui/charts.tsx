/** Charts: uPlot for the gateway-wide series, a canvas sparkline for each stream's rate. */
import { useEffect, useRef } from 'preact/hooks'
import uPlot from 'uplot'

export interface ChartProps {
  /** Accessible name and visible title. */
  title: string
  /** x: seconds since epoch. */
  xs: number[]
  ys: number[]
  /** How a value is shown on the axis. */
  format: (v: number) => string
  width?: number
  height?: number
}

/** A line chart of one series over time (uPlot, drawn on a canvas). */
export function Chart({ title, xs, ys, format, width = 360, height = 150 }: ChartProps) {
  const box = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  useEffect(() => {
    if (box.current === null) return
    plot.current = new uPlot(
      {
        width,
        height,
        legend: { show: false },
        cursor: { show: false },
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        axes: [{}, { values: (_u, ticks) => ticks.map(format), size: 70 }],
        series: [{}, { label: title, stroke: '#1f5fbf', width: 2, fill: 'rgba(31,95,191,0.12)' }],
      },
      [xs, ys],
      box.current,
    )
    return () => {
      plot.current?.destroy()
      plot.current = null
    }
  }, [])
  useEffect(() => {
    plot.current?.setData([xs, ys])
  }, [xs, ys])
  const last = ys.length > 0 ? format(ys[ys.length - 1] as number) : 'no data yet'
  return (
    <figure class="chart">
      <figcaption>
        {title}: <span class="chart-now">{last}</span>
      </figcaption>
      <div ref={box} role="img" aria-label={`${title} over the last minutes; now ${last}`} />
    </figure>
  )
}

/** A small rate chart (the last points of one stream) drawn on a canvas. */
export function Sparkline({ values, label }: { values: number[]; label: string }) {
  const canvas = useRef<HTMLCanvasElement>(null)
  useEffect(() => {
    const c = canvas.current
    const ctx = c?.getContext('2d')
    if (c === null || c === undefined || ctx === null || ctx === undefined) return
    const w = c.width
    const h = c.height
    ctx.clearRect(0, 0, w, h)
    if (values.length < 2) return
    const max = Math.max(1, ...values)
    ctx.strokeStyle = '#1f5fbf'
    ctx.lineWidth = 1.5
    ctx.beginPath()
    values.forEach((v, i) => {
      const x = (i / (values.length - 1)) * (w - 2) + 1
      const y = h - 1 - (v / max) * (h - 2)
      if (i === 0) ctx.moveTo(x, y)
      else ctx.lineTo(x, y)
    })
    ctx.stroke()
  }, [values])
  return <canvas ref={canvas} width={96} height={24} role="img" aria-label={label} />
}
