// The Java client as a producer for test_codecs.py: reads "seq<TAB>member<TAB>value" lines from
// stdin, sends each to one partition with the given codec (linger, so batches hold many
// records), and prints "seq<TAB>partition<TAB>offset" for each acknowledged record.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class CodecProducer {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("acks", "all");
        props.put("enable.idempotence", "false"); // Tansu has no InitProducerId
        props.put("compression.type", args[3]);
        props.put("linger.ms", "100");
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        String topic = args[1];
        int partition = Integer.parseInt(args[2]);
        List<String> seqs = new ArrayList<>();
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props);
             BufferedReader in = new BufferedReader(
                     new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            String line;
            while ((line = in.readLine()) != null) {
                String[] parts = line.split("\t", 3);
                seqs.add(parts[0]);
                sent.add(producer.send(new ProducerRecord<>(topic, partition,
                        parts[1].getBytes(StandardCharsets.UTF_8),
                        parts[2].getBytes(StandardCharsets.UTF_8))));
            }
            producer.flush();
            for (int i = 0; i < sent.size(); i++) {
                RecordMetadata meta = sent.get(i).get();
                System.out.println(seqs.get(i) + "\t" + meta.partition() + "\t" + meta.offset());
            }
        }
    }
}
