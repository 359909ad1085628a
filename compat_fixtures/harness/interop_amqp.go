package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQP settings of the live mode (an amqp:// or amqps:// --broker). They are
// what machinery's examples and most users configure: a durable direct
// exchange "machinery_exchange" and BindingKey = the queue, so the routing
// key AdjustRoutingKey gives an unrouted task is the queue itself.
const amqpExchange = "machinery_exchange"

func isAMQP(url string) bool {
	return strings.HasPrefix(url, "amqp://") || strings.HasPrefix(url, "amqps://")
}

// amqpConfig is cnf.AMQP for queue (machinery's AMQP broker panics without one).
func amqpConfig(queue string, prefetch int) *AMQPConfig {
	return &AMQPConfig{
		Exchange:      amqpExchange,
		ExchangeType:  "direct",
		BindingKey:    queue,
		PrefetchCount: prefetch,
	}
}

// amqpConsumers is the consumer count of queue (0 when it does not exist yet).
func amqpConsumers(url, queue string) (int, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil { // 404: nobody declared it yet
		return 0, nil
	}
	return q.Consumers, nil
}

// announceAMQPConsumer calls ready once queue has more consumers than
// before (the AMQP broker never calls the PreConsumeHandler). After 30 s
// without one it prints "worker not consuming" instead (a refused
// declaration keeps machinery's worker retrying, never consuming).
func announceAMQPConsumer(url, queue string, before int, ready func()) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if n, err := amqpConsumers(url, queue); err == nil && n > before {
			ready()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintln(os.Stdout, "worker not consuming")
}
